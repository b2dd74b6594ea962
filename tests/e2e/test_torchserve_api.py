"""TorchServe's own management and inference APIs at the gateway, called as TorchServe's
documentation calls them (its base URL changed to the gateway's /torchserve, a token
added), on granian, two replicas behind HAProxy and PostgreSQL (tests/support/fleet.py):
a second version of `classifier` and a second model that is not ours (a torchvision
network with TorchServe's built-in image_classifier handler), scaled, promoted,
described, listed page by page, unregistered; both replicas serve what was declared and
a replica's restart keeps it. A service account limited to that second model may use
it and manage it, and nothing else.

The tests run in order, each on the state the one before left."""

import os
import signal

import pytest
import requests

from devstack import images
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token
from devstack.waiting import MODEL_READY_S, wait_for
from gateway.identity.users import UserStore
from tests.support.archives import builtin_image_classifier
from tests.support.fleet import running_fleet, served

pytestmark = pytest.mark.e2e
OTHER = "mobilenet"  # the second model: not ours


@pytest.fixture(scope="module")
def stack(tmp_path_factory, model_store, users_file, jwt_keys):
    for version, seed in (("1.0", 0), ("2.0", 1)):
        if not (model_store / f"{OTHER}-{version}.mar").exists():
            builtin_image_classifier(model_store, OTHER, version, seed)
    base = tmp_path_factory.mktemp("torchserve-api")
    users = base / "users.json"
    users.write_bytes(users_file.read_bytes())
    store = UserStore(users)
    secret = store.set_client("team-b", ("predict", "models:admin"))
    store.set_models("team-b", (OTHER,))
    with running_fleet(base, model_store, jwt_keys_file=jwt_keys, users_file=users,
                       max_workers_per_version=2) as (fleet, gateway):
        admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
        yield fleet, gateway, admin, ("team-b", secret)


def ts(gateway) -> str:
    """The base URL a TorchServe client is given: inference and management alike."""
    return gateway.url + "/torchserve"


def is_torchserve_error(response, status: int) -> bool:
    body = response.json()
    return (response.status_code == status and set(body) == {"code", "type", "message"}
            and body["code"] == status)


def show(response) -> str:
    """A call and its answer, for the closing note's record (-s shows them)."""
    line = f"{response.request.method} {response.request.path_url} -> {response.status_code} " \
           f"{response.text[:300]}"
    print(line)
    return line


def test_register_a_version_and_a_second_model(stack):
    fleet, gateway, admin, _ = stack
    # curl -X POST "http://localhost:8081/models?url=classifier-2.0.mar&initial_workers=1"
    registered = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=300,
                               params={"url": "classifier-2.0.mar", "initial_workers": 1})
    show(registered)
    assert registered.status_code == 200, registered.text
    assert registered.json() == {"status": 'Model "classifier" Version: 2.0 registered with '
                                           "1 initial workers"}
    again = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=300,
                          params={"url": "classifier-2.0.mar"})
    show(again)
    assert is_torchserve_error(again, 409)
    for url in ("https://example.com/evil.mar", "file:///etc/passwd", "../classifier-1.0.mar"):
        refused = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=30,
                                params={"url": url})
        show(refused)
        assert is_torchserve_error(refused, 400), url
    unknown = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=30,
                            params={"url": "nothing-1.0.mar"})
    assert is_torchserve_error(unknown, 404)
    # The JSON body TorchServe also takes (the SageMaker-style register).
    other = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=300,
                          json={"url": f"{OTHER}-1.0.mar", "batch_size": 4,
                                "max_batch_delay": 50, "initial_workers": 1})
    show(other)
    assert other.status_code == 200, other.text
    later = requests.post(f"{ts(gateway)}/models", headers=admin, timeout=30,
                          params={"url": f"{OTHER}-2.0.mar", "synchronous": "false"})
    show(later)
    assert later.status_code == 202, later.text
    for replica in fleet.replicas:
        default, ready = served(replica)
        assert default == "1.0" and ready["2.0"] >= 1, replica.replica_id
        replica.wait(lambda r=replica: served(r, OTHER)[1].get("2.0"), MODEL_READY_S,
                     f"{OTHER} 2.0 on {replica.replica_id}")
        described = requests.get(f"{replica.management_url}/models/{OTHER}/1.0",
                                 timeout=10).json()[0]
        assert (described["batchSize"], described["maxBatchDelay"]) == (4, 50)
        assert served(replica, OTHER)[0] == "1.0"  # a model's first version is its default


def test_describe_and_list_page_by_page(stack):
    _, gateway, admin, _ = stack
    first = requests.get(f"{ts(gateway)}/models", headers=admin, timeout=30,
                         params={"limit": 1})
    show(first)
    assert first.json() == {"models": [{"modelName": "classifier",
                                        "modelUrl": "classifier-1.0.mar"}],
                            "nextPageToken": "1"}
    second = requests.get(f"{ts(gateway)}/models", headers=admin, timeout=30,
                          params={"limit": 1, "next_page_token": 1})
    show(second)
    assert second.json() == {"models": [{"modelName": OTHER, "modelUrl": f"{OTHER}-1.0.mar"}]}
    default = requests.get(f"{ts(gateway)}/models/{OTHER}", headers=admin, timeout=30,
                           params={"customized": "true"})
    show(default)
    [described] = default.json()
    assert (described["modelName"], described["modelVersion"], described["batchSize"]) == (
        OTHER, "1.0", 4)
    assert len(described["workers"]) == 2 and {w["status"] for w in described["workers"]} == {
        "READY"}  # one per replica
    every = requests.get(f"{ts(gateway)}/models/{OTHER}/all", headers=admin, timeout=30)
    assert [d["modelVersion"] for d in every.json()] == ["1.0", "2.0"]
    assert is_torchserve_error(requests.get(f"{ts(gateway)}/models/{OTHER}/9.9", headers=admin,
                                            timeout=30), 404)
    assert is_torchserve_error(requests.get(f"{ts(gateway)}/models/nothing", headers=admin,
                                            timeout=30), 404)


def test_scale_workers_on_every_replica(stack):
    fleet, gateway, admin, _ = stack
    scaled = requests.put(f"{ts(gateway)}/models/{OTHER}/1.0", headers=admin, timeout=300,
                          params={"min_worker": 2, "max_worker": 2})
    show(scaled)
    assert scaled.status_code == 200, scaled.text
    for replica in fleet.replicas:
        assert served(replica, OTHER)[1]["1.0"] == 2, replica.replica_id
    too_many = requests.put(f"{ts(gateway)}/models/{OTHER}/1.0", headers=admin, timeout=30,
                            params={"min_worker": 3, "max_worker": 3})
    show(too_many)
    assert is_torchserve_error(too_many, 400)


def test_set_default_and_predict_the_torchserve_way(stack):
    fleet, gateway, admin, _ = stack
    promoted = requests.put(f"{ts(gateway)}/models/{OTHER}/2.0/set-default", headers=admin,
                            timeout=300)
    show(promoted)
    assert promoted.status_code == 200, promoted.text
    assert [served(r, OTHER)[0] for r in fleet.replicas] == ["2.0", "2.0"]
    # curl http://localhost:8080/predictions/mobilenet -T kitten.jpg (a PUT, raw body)
    raw = requests.put(f"{ts(gateway)}/predictions/{OTHER}", headers=admin, timeout=120,
                       data=images.jpeg())
    show(raw)
    assert raw.status_code == 200, raw.text
    answer = raw.json()  # the built-in handler's, passed through: {label: probability}
    assert len(answer) == 5 and all(isinstance(p, float) for p in answer.values())
    direct = requests.put(f"{fleet.replicas[0].url}/predictions/{OTHER}",
                          data=images.jpeg(), timeout=120)
    assert direct.json() == answer  # the same version's answer, straight from TorchServe
    form = requests.post(f"{ts(gateway)}/predictions/classifier/2.0", headers=admin,
                         timeout=120, files={"data": ("cat.jpg", images.jpeg())})
    show(form)
    assert form.status_code == 200 and form.json()["model_version"] == "2.0", form.text
    rows = requests.get(gateway.url + "/predictions", headers=admin, timeout=30,
                        params={"limit": 2}).json()["items"]
    assert [(r["model_name"], r["model_version"]) for r in rows] == [
        ("classifier", "2.0"), (OTHER, "2.0")]
    by_model = requests.get(gateway.url + "/usage", headers=admin, timeout=30,
                            params={"group_by": "model"}).json()["groups"]
    assert {g["key"] for g in by_model} >= {"classifier", OTHER}
    assert is_torchserve_error(requests.post(f"{ts(gateway)}/predictions/nothing",
                                             headers=admin, data=images.jpeg(), timeout=30), 404)


def test_a_caller_limited_to_one_model(stack):
    _, gateway, admin, (client_id, secret) = stack
    basic = (client_id, secret)
    allowed = requests.post(f"{ts(gateway)}/predictions/{OTHER}", auth=basic, timeout=120,
                            data=images.jpeg())
    show(allowed)
    assert allowed.status_code == 200, allowed.text
    token = requests.post(gateway.url + "/token", auth=basic, timeout=30,
                          data={"grant_type": "client_credentials"}).json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    refusals = [
        requests.post(f"{ts(gateway)}/predictions/classifier", auth=basic, timeout=30,
                      data=images.jpeg()),
        requests.post(gateway.url + "/v2/models/classifier/infer", headers=bearer, timeout=30,
                      json={"inputs": []}),
        requests.get(gateway.url + "/v2/models/classifier", headers=bearer, timeout=30),
        requests.post(gateway.url + "/predict", headers=bearer, timeout=30,
                      files={"file": ("cat.jpg", images.jpeg())}),
        requests.post(gateway.url + "/predict", headers=bearer, timeout=30,
                      params={"model": "classifier"}, files={"file": ("cat.jpg", images.jpeg())}),
        requests.delete(f"{ts(gateway)}/models/classifier/2.0", auth=basic, timeout=30),
        requests.get(gateway.url + "/models/classifier", headers=bearer, timeout=30),
    ]
    for refused in refusals:
        show(refused)
        assert refused.status_code == 403, refused.text
        assert "for model classifier" in refused.text, refused.text
    assert requests.get(gateway.url + f"/v2/models/{OTHER}", headers=bearer,
                        timeout=30).status_code == 200
    listed = requests.get(f"{ts(gateway)}/models", auth=basic, timeout=30)
    show(listed)
    assert [m["modelName"] for m in listed.json()["models"]] == [OTHER]
    wrong = requests.get(f"{ts(gateway)}/models", auth=(client_id, "not the secret"), timeout=30)
    assert is_torchserve_error(wrong, 401)
    assert requests.get(f"{ts(gateway)}/models", timeout=30).status_code == 401
    # The admin of everything still sees both.
    assert len(requests.get(f"{ts(gateway)}/models", headers=admin,
                            timeout=30).json()["models"]) == 2


def test_unregister_the_torchserve_way(stack):
    fleet, gateway, admin, _ = stack
    default = requests.delete(f"{ts(gateway)}/models/classifier/1.0", headers=admin, timeout=60)
    show(default)
    assert is_torchserve_error(default, 403)  # the default, while 2.0 is registered
    gone = requests.delete(f"{ts(gateway)}/models/classifier/2.0", headers=admin, timeout=300)
    show(gone)
    assert gone.status_code == 200, gone.text
    assert [set(served(r)[1]) for r in fleet.replicas] == [{"1.0"}, {"1.0"}]
    assert is_torchserve_error(requests.delete(f"{ts(gateway)}/models/nothing/1.0",
                                               headers=admin, timeout=30), 404)
    last = requests.delete(f"{ts(gateway)}/models/classifier", headers=admin, timeout=30)
    assert is_torchserve_error(last, 403)  # MODEL_NAME keeps its one version: /predict's


def test_a_restarted_replica_serves_what_was_declared(stack):
    fleet, gateway, _, _ = stack
    victim = fleet.replicas[1]
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(30)
    fleet.route_to_ready()
    victim.start()
    victim.wait_ready()
    fleet.route_to_ready()
    wait_for(lambda: served(victim, OTHER) == ("2.0", {"1.0": 2, "2.0": 1}),
             timeout=MODEL_READY_S, what=f"{OTHER} as declared on the restarted replica")
    assert served(victim) == ("1.0", {"1.0": 1})


def test_a_model_goes_with_its_last_version(stack):
    fleet, gateway, admin, _ = stack
    assert requests.delete(f"{ts(gateway)}/models/{OTHER}/1.0", headers=admin,
                           timeout=300).status_code == 200
    last = requests.delete(f"{ts(gateway)}/models/{OTHER}", headers=admin, timeout=300)
    show(last)
    assert last.status_code == 200, last.text
    for replica in fleet.replicas:
        wait_for(lambda r=replica: requests.get(f"{r.management_url}/models/{OTHER}",
                                                timeout=10).status_code == 404,
                 timeout=MODEL_READY_S, what=f"{OTHER} gone from {replica.replica_id}")
    assert is_torchserve_error(requests.get(f"{ts(gateway)}/models/{OTHER}", headers=admin,
                                            timeout=30), 404)
    assert requests.get(f"{ts(gateway)}/ping", timeout=30).json() == {"status": "Healthy"}
