"""Model versions as declared state across replicas: two, then three, model replicas
behind HAProxy, one real PostgreSQL (tests/support/fleet.py)."""

import os
import shutil
import signal
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from agent.model_agent import ModelAgent
from core.catalog import Catalog
from core.database import schema
from core.database.engine import database_engine
from core.model_history import Actor
from core.settings import Settings
from core.signatures import signature_beside
from core.torchserve_client import TorchServeClient
from devstack import images
from devstack.backends import Prometheus, required_or_skip
from devstack.servers import ReplicaServer, TorchServeServer
from devstack.signing import signature_header
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, BackgroundPredictions, get_token
from devstack.waiting import MODEL_READY_S, wait_for
from modelbuild import archive, signing, weights
from tests.support import archives
from tests.support.fleet import running_fleet, served

pytestmark = pytest.mark.e2e
MODELS = "/models/classifier"


@pytest.fixture(scope="module")
def trusted_keys(tmp_path_factory, signing_key) -> Path:
    """The fleet's own trusted keys file (the run's key at first), which a test rotates."""
    path = tmp_path_factory.mktemp("fleet-keys") / "trusted-keys.pem"
    shutil.copy(signing_key, path)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory, model_store, users_file, jwt_keys, trusted_keys):
    with pytest.MonkeyPatch.context() as env:
        env.setenv("MODEL_TRUSTED_KEYS_FILE", str(trusted_keys))  # every process it starts
        with running_fleet(tmp_path_factory.mktemp("replicas"), model_store,
                           jwt_keys_file=jwt_keys, users_file=users_file,
                           predict_rate_limit="100000 per minute",
                           max_inflight_predictions=64) as (fleet, gateway):
            admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
            yield fleet, gateway, admin, get_token(gateway)


def predict(gateway, token, version=None) -> requests.Response:
    return requests.post(gateway.url + "/predict", headers={"Authorization": f"Bearer {token}"},
                         params={"model_version": version} if version else {},
                         files={"file": ("cat.jpg", images.jpeg())}, timeout=120)


@contextmanager
def under_load(gateway, token, clients: int) -> Iterator[list[BackgroundPredictions]]:
    """`clients` background prediction clients, the block run once 5 answers are in;
    every client stopped after it, whatever happens."""
    running = [BackgroundPredictions(gateway, token) for _ in range(clients)]
    for client in running:
        client.start()
    try:
        running[0].wait_for_more(5)
        yield running
    finally:
        for client in running:
            client.stop()


def test_first_replicas_adopt_the_seed_and_agree(fleet):
    fleet, gateway, admin, _ = fleet
    overview = requests.get(gateway.url + MODELS, headers=admin, timeout=30).json()
    assert overview["default_version"] == "1.0"
    assert [r["replica_id"] for r in overview["replicas"]] == ["replica-1", "replica-2"]
    assert overview["replicas_agree"] is True
    assert [served(r)[0] for r in fleet.replicas] == ["1.0", "1.0"]


def test_register_reaches_every_replica(fleet):
    fleet, gateway, admin, _ = fleet
    registered = requests.post(gateway.url + MODELS + "/versions", headers=admin, timeout=300,
                               json={"archive": "classifier-2.0.mar"})
    assert registered.status_code == 201, registered.text
    assert registered.json()["pending"] == []
    for replica in fleet.replicas:
        default, ready = served(replica)
        assert default == "1.0" and ready["1.0"] >= 1 and ready["2.0"] >= 1, replica.replica_id


def test_promote_under_four_way_load_fails_nothing(fleet):
    fleet, gateway, admin, token = fleet
    with under_load(gateway, token, 4) as clients:
        promoted = requests.put(gateway.url + MODELS + "/versions/2.0/default", headers=admin,
                                timeout=300)
        assert promoted.status_code == 200, promoted.text
        clients[0].wait_for_more(5)
    results = [r for c in clients for r in c.results]
    statuses = Counter(status for status, _ in results)
    print(f"promote under 4-way load: {len(results)} predictions, statuses {dict(statuses)}")
    assert statuses == {200: len(results)}
    assert {version for _, version in results} == {"1.0", "2.0"}
    assert [served(r)[0] for r in fleet.replicas] == ["2.0", "2.0"]
    assert predict(gateway, token).json()["model_version"] == "2.0"


def test_a_20_percent_canary_spans_both_replicas(fleet):
    fleet, gateway, admin, token = fleet
    started = requests.put(gateway.url + MODELS + "/rollout", headers=admin, timeout=30,
                           json={"version": "1.0", "percent": 20})
    assert started.status_code == 200, started.text
    try:
        versions = Counter(predict(gateway, token).json()["model_version"] for _ in range(200))
    finally:
        requests.delete(gateway.url + MODELS + "/rollout", headers=admin, timeout=30)
    print(f"20 % canary over two replicas: {dict(versions)}")
    # Binomial(200, 0.2): 40 expected; 15-70 holds with probability above 1 - 1e-6.
    assert set(versions) == {"1.0", "2.0"} and 15 <= versions["1.0"] <= 70


def test_a_version_that_cannot_load_costs_no_availability(fleet, model_store, tmp_path):
    """A damaged archive is refused at push; a valid one whose handler raises in
    initialize(), registered under four-way load, is answered with both replicas' errors,
    leaves both ready and serving the default, fires the alert, and is routed to none."""
    required_or_skip(shutil.which("prometheus") is not None, "prometheus")
    fleet, gateway, admin, token = fleet
    good = model_store / "classifier-2.0.mar"
    damaged = requests.post(gateway.url + MODELS + "/archives", headers=admin, timeout=300,
                            params={"filename": "classifier-2.0.mar"}, data=archives.flipped(good))
    assert damaged.status_code == 422, damaged.text
    assert damaged.json()["detail"].startswith("damaged archive: member model.pt: ")
    broken = archives.raising_in_initialize(good, tmp_path, "9.0")
    pushed = requests.post(gateway.url + MODELS + "/archives", timeout=300,
                           headers={**admin, **signature_header(broken)},
                           params={"filename": broken.name}, data=broken.read_bytes())
    assert pushed.status_code == 201, pushed.text
    prometheus = Prometheus(tmp_path, {"gateway": [gateway.url.removeprefix("http://")]}).start()
    readiness = []
    try:
        with under_load(gateway, token, 4) as clients:
            registered = requests.post(gateway.url + MODELS + "/versions", headers=admin,
                                       timeout=300, json={"archive": broken.name})
            readiness += [r.ready() for r in fleet.replicas]
            wait_for(lambda: any(a["state"] == "firing"
                                 for a in prometheus.alerts("ModelVersionCannotLoad")),
                     timeout=MODEL_READY_S, what="ModelVersionCannotLoad to fire",
                     log=prometheus.log_tail)
            pinned = predict(gateway, token, "9.0")
            clients[0].wait_for_more(5)
            readiness += [r.ready() for r in fleet.replicas]
    finally:
        prometheus.stop()
    assert registered.status_code == 422, registered.text
    body = registered.json()
    assert "no live replica can load it: replica-1 (failed to load: " in body["status"]
    [version] = [v for v in body["versions"] if v["version"] == "9.0"]
    assert set(version["load_errors"]) == {"replica-1", "replica-2"}
    assert all(ok for ok, _ in readiness), readiness
    results = [r for c in clients for r in c.results]
    statuses = Counter(status for status, _ in results)
    print(f"a version that cannot load, registered under 4-way load: {len(results)} "
          f"predictions, statuses {dict(statuses)}; register answered in "
          f"{registered.elapsed.total_seconds():.1f} s: {body['status']}")
    assert statuses == {200: len(results)} and {v for _, v in results} == {"2.0"}
    assert pinned.status_code == 503 and "cannot load" in pinned.json()["detail"]
    # Retired, it is forgotten: no error, no alert's figure.
    retired = requests.delete(gateway.url + MODELS + "/versions/9.0", headers=admin, timeout=300)
    assert retired.status_code == 200, retired.text
    wait_for(lambda: all(not r["errors"] for r in requests.get(
        gateway.url + MODELS, headers=admin, timeout=30).json()["replicas"]),
        timeout=MODEL_READY_S, what="the replicas' errors cleared")


def push(gateway, admin, path: Path, signed: bool = True) -> requests.Response:
    headers = {**admin, **(signature_header(path) if signed else {})}
    return requests.post(gateway.url + MODELS + "/archives", params={"filename": path.name},
                         data=path.read_bytes(), headers=headers, timeout=300)


def replace_file(path: Path, data: bytes) -> None:
    """As a Secret's update or an operator's `mv` does: the new file whole, at once."""
    partial = path.with_name(path.name + ".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def test_only_archives_signed_by_a_trusted_key_are_declared_or_served(fleet, trusted_keys,
                                                                       model_store, tmp_path):
    """A changed, an unknown key's and an unsigned archive are refused at push; planted
    straight into the database, both agents refuse them (never READY, reported, the alert
    fires); a signing key rotates under load without a failed request."""
    required_or_skip(shutil.which("prometheus") is not None, "prometheus")
    fleet, gateway, admin, token = fleet
    stranger = signing.new_key(tmp_path / "stranger")
    changed = archives.one_label_changed(model_store / "classifier-2.0.mar",
                                         tmp_path / "classifier-2.0.mar")
    bad = {"9.1": archives.one_label_changed(
               archive.build("9.1", weights.random_weights(3), tmp_path / "good"),
               tmp_path / "classifier-9.1.mar"),
           "9.2": archive.build("9.2", weights.random_weights(3), tmp_path / "stranger",
                                signing_key=stranger),
           "9.3": archive.build("9.3", weights.random_weights(3), tmp_path / "unsigned")}
    bad["9.3"].with_name(bad["9.3"].name + ".sig").unlink()
    for path, signed, why in [(changed, True, "the archive's bytes are not the ones signed"),
                              (bad["9.2"], True, "not signed by a trusted key"),
                              (bad["9.3"], False, "unsigned")]:
        refused = push(gateway, admin, path, signed)
        assert refused.status_code == 422 and why in refused.json()["detail"], refused.text
        print(f"push {path.name} ({'signed' if signed else 'no signature'}): "
              f"{refused.status_code} {refused.json()['detail']}")
    # Planted past the gateway, with whatever signature each carries.
    catalog = Catalog(database_engine(fleet.database_url), "classifier")
    intruder = Actor("intruder")
    for path in bad.values():
        catalog.declare(catalog.store_archive(path, path.name, intruder,
                                              signature=signature_beside(path)), intruder)
    prometheus = Prometheus(tmp_path, {"gateway": [gateway.url.removeprefix("http://")]}).start()
    try:
        def refused_everywhere():
            versions = requests.get(gateway.url + MODELS, headers=admin, timeout=30).json()
            errors = {v["version"]: v["load_errors"] for v in versions["versions"]
                      if v["version"] in bad}
            return errors if all(set(e) == {"replica-1", "replica-2"} for e in errors.values()) \
                else None

        errors = wait_for(refused_everywhere, timeout=MODEL_READY_S,
                          what="both agents refusing the planted archives")
        wait_for(lambda: any(a["state"] == "firing"
                             for a in prometheus.alerts("ModelVersionCannotLoad")),
                 timeout=MODEL_READY_S, what="ModelVersionCannotLoad to fire",
                 log=prometheus.log_tail)
    finally:
        prometheus.stop()
    for version, why in [("9.1", "the archive's bytes are not the ones signed"),
                         ("9.2", "not signed by a trusted key"), ("9.3", "unsigned")]:
        assert all(why in e for e in errors[version].values()), errors[version]
        print(f"planted {version}: {errors[version]['replica-1']}")
    assert all(not set(served(r)[1]) & set(bad) for r in fleet.replicas)  # never READY
    for version in bad:
        assert requests.delete(gateway.url + MODELS + f"/versions/{version}", headers=admin,
                               timeout=300).ok
    # Rotation: trust both keys, sign again with the new one, then drop the old one.
    with under_load(gateway, token, 2) as clients:
        new_key = signing.new_key(tmp_path / "new")
        old_public = trusted_keys.read_bytes()
        replace_file(trusted_keys, old_public + new_key.with_name(signing.TRUSTED_KEYS).read_bytes())
        for version in ("1.0", "2.0"):
            again = Path(shutil.copy(model_store / f"classifier-{version}.mar", tmp_path / "new"))
            signing.sign(again, new_key)
            assert push(gateway, admin, again).status_code == 201
        fresh = archive.build("9.5", weights.random_weights(4), tmp_path / "new",
                              signing_key=new_key)
        assert push(gateway, admin, fresh).status_code == 201
        replace_file(trusted_keys, new_key.with_name(signing.TRUSTED_KEYS).read_bytes())
        registered = requests.post(gateway.url + MODELS + "/versions", headers=admin,
                                   json={"archive": fresh.name}, timeout=300)
        assert registered.status_code == 201, registered.text
        old_signed = push(gateway, admin, model_store / "classifier-2.0.mar")
        assert old_signed.status_code == 422, old_signed.text
        clients[0].wait_for_more(5)
    results = [r for c in clients for r in c.results]
    statuses = Counter(status for status, _ in results)
    print(f"key rotation under 2-way load: {len(results)} predictions, statuses {dict(statuses)}")
    assert statuses == {200: len(results)}
    history = requests.get(gateway.url + MODELS + "/history", headers=admin, timeout=30,
                           params={"limit": 5}).json()["items"]
    assert [r["action"] for r in history][:4] == ["register", "push", "sign", "sign"]
    assert requests.delete(gateway.url + MODELS + "/versions/9.5", headers=admin,
                           timeout=300).ok


def restart_on_an_empty_disk(replica: ReplicaServer) -> list[str]:
    """Start the replica again with an empty store and run directory; return its readiness
    answers until ready, checking at the first "ready" that it serves the default, then
    that it comes to serve every declared version."""
    for directory in (replica.store, replica.run_dir / "tmp", replica.run_dir / "logs"):
        shutil.rmtree(directory, ignore_errors=True)
    replica.state_file.unlink(missing_ok=True)
    replica.start()
    answers = []

    def ready():
        ok, reason = replica.ready()
        answers.append(reason)
        if ok:
            default, versions = served(replica)
            assert default == "2.0" and versions.get("2.0"), (default, versions)
        return ok

    replica.wait(ready, MODEL_READY_S, f"{replica.replica_id} ready again")
    replica.wait_converged()
    assert served(replica)[1].get("1.0")
    return answers


def test_a_killed_replica_returns_on_an_empty_disk_with_every_version(fleet):
    fleet, gateway, admin, token = fleet
    victim = fleet.replicas[1]
    os.killpg(victim.proc.pid, signal.SIGKILL)
    victim.proc.wait(30)
    fleet.route_to_ready()
    meanwhile = predict(gateway, token)
    assert meanwhile.status_code == 200, meanwhile.text  # the other replica serves meanwhile
    answers = restart_on_an_empty_disk(victim)
    assert len(answers) > 1, answers  # it was not ready at first
    fleet.route_to_ready()
    overview = requests.get(gateway.url + MODELS, headers=admin, timeout=30).json()
    assert overview["replicas_agree"] is True, overview["replicas"]


def test_a_third_replica_joins_with_every_version(fleet):
    fleet, gateway, admin, token = fleet
    third = fleet.add_replica()
    third.wait_ready()
    third.wait_converged()
    default, versions = served(third)
    assert default == "2.0" and versions["1.0"] >= 1 and versions["2.0"] >= 1
    fleet.route_to_ready()
    overview = requests.get(gateway.url + MODELS, headers=admin, timeout=30).json()
    assert [r["replica_id"] for r in overview["replicas"] if r["live"]] == [
        "replica-1", "replica-2", "replica-3"]
    assert overview["replicas_agree"] is True
    pinned = Counter(predict(gateway, token, "1.0").status_code for _ in range(12))
    assert pinned == {200: 12}


def worker_pids(torchserve) -> dict[str, list[int]]:
    described = requests.get(f"{torchserve.management_url}/models/classifier/all", timeout=10)
    return {d["modelVersion"]: sorted(w["pid"] for w in d["workers"]) for d in described.json()}


def test_the_first_agent_adopts_what_a_running_torchserve_serves(tmp_path, model_store):
    """An upgrade in place: a TorchServe as deployments ran it before declared state
    (classifier-1.0.mar loaded at start, 2.0 registered and promoted through the
    management API), then the real agent, on a database where nothing was declared:
    it declares what is served, default included, and reloads nothing."""
    database_url = f"sqlite:///{tmp_path / 'adopt.db'}"
    schema.upgrade(database_url)
    torchserve = TorchServeServer(model_store, tmp_path / "torchserve")
    torchserve.start()
    try:
        torchserve.wait_ready()
        management = torchserve.management_url
        assert requests.post(f"{management}/models", timeout=300, params={
            "url": "classifier-2.0.mar", "initial_workers": 1, "synchronous": "true"}).ok
        assert requests.put(f"{management}/models/classifier/2.0/set-default", timeout=30).ok
        before = worker_pids(torchserve)
        settings = Settings.from_env(
            {}, require_secret=False, database_url=database_url, model_store=str(model_store),
            agent_store=str(tmp_path / "store"), agent_state_file=str(tmp_path / "state.json"),
            torchserve_management_url=management, replica_id="upgraded")
        engine = database_engine(database_url)
        catalog = Catalog(engine, settings.model_name)
        converged, pending = ModelAgent(settings, engine, TorchServeClient(settings)).step()
        assert converged, pending
        assert {d.version: d.is_default for d in catalog.declared()} == {"1.0": False, "2.0": True}
        assert worker_pids(torchserve) == before
    finally:
        torchserve.stop()
