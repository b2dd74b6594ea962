"""Canary and shadow rollouts, guarded: a real TorchServe serving two real archive
versions (different seeded weights) behind granian with two processes and Redis."""

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import torch
from PIL import Image
from sqlalchemy import create_engine, text

from devstack import images
from devstack.backends import Redis, required_or_skip
from devstack.servers import ROOT
from devstack.stack import (ADMIN_PASSWORD, ADMIN_USER, DEMO_PASSWORD, DEMO_USER, get_token,
                            start_stack, users_file_with)
from devstack.waiting import wait_for
from gateway.models.control_snapshot import MAX_AGE_SECONDS
from modelbuild import archive, weights

pytestmark = pytest.mark.e2e
RIDERS = [(f"rider{i:02d}", f"rider-password-{i:02d}") for i in range(20)]
MODELS = "/models/classifier"


class Broken(torch.nn.Module):
    """A candidate that loads and registers, then fails every inference."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() > 0:
            raise RuntimeError("this candidate fails at inference, on purpose")
        return x


def nudged_archive(store, version: str) -> None:
    """1.0's weights with a little noise on the last layer: a candidate that agrees with
    1.0 on some images and not others (0.75 top-1 on the noise images below, measured)."""
    state = {name: tensor.clone() for name, tensor in weights.random_weights(0).state_dict.items()}
    state["fc.weight"] += 0.01 * torch.randn(state["fc.weight"].shape,
                                             generator=torch.Generator().manual_seed(3))
    archive.build(version, weights.ResolvedWeights(state, "random"), store)


def broken_archive(store, version: str) -> None:
    work = store / f"work-{version}"
    work.mkdir()
    archive.write_model_files(weights.random_weights(0), work)  # labels, weights.json
    torch.jit.save(torch.jit.script(Broken()), str(work / "model.pt"))
    record = json.loads((work / "weights.json").read_text())
    (work / "weights.json").write_text(json.dumps({**record, "variant": "int8"}))
    archive.package(work, version, store)
    shutil.rmtree(work)


@pytest.fixture(scope="module")
def rollout_stack(tmp_path_factory, model_store, users_file, jwt_keys):
    required_or_skip(shutil.which("redis-server") is not None, "redis-server")
    base = tmp_path_factory.mktemp("rollouts")
    store = base / "store"
    shutil.copytree(model_store, store)
    nudged_archive(store, "2.1")
    broken_archive(store, "3.0-broken")
    users = base / "users.json"
    users_file_with(users_file, users, RIDERS)
    redis = Redis().start()
    try:
        torchserve, gateway = start_stack(base, store, users, jwt_keys, gateway_workers=2,
                                          rate_limit_storage_uri=redis.url)
    except BaseException:
        redis.stop()
        raise
    try:
        admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
        for mar in ("classifier-2.0.mar", "classifier-2.1.mar", "classifier-3.0-broken.mar"):
            registered = requests.post(gateway.url + MODELS + "/versions",
                                       json={"archive": mar}, headers=admin, timeout=200)
            assert registered.status_code == 201, registered.text
        yield gateway, admin
    finally:
        gateway.stop()
        torchserve.stop()
        redis.stop()


@pytest.fixture
def stack(rollout_stack):
    """The stack, left with no active rollout and 1.0 as the default after each test."""
    gateway, admin = rollout_stack
    yield gateway, admin
    requests.delete(gateway.url + MODELS + "/rollout", headers=admin, timeout=10)
    requests.put(gateway.url + MODELS + "/versions/1.0/default", headers=admin, timeout=30)
    time.sleep(MAX_AGE_SECONDS + 0.1)  # every process sees it


def start(gateway, admin, **body) -> dict:
    response = requests.put(gateway.url + MODELS + "/rollout", json=body, headers=admin, timeout=30)
    assert response.status_code == 200, response.text
    time.sleep(MAX_AGE_SECONDS + 0.1)  # every process reads the rollout at most that late
    return response.json()["rollout"]


def overview(gateway, admin) -> dict:
    response = requests.get(gateway.url + MODELS, headers=admin, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def predict_many(gateway, token, count, concurrency=8, version=None, payloads=None):
    """(status, served version) of `count` /predict calls."""
    payloads = payloads or [images.jpeg()]

    def one(i):
        response = requests.post(
            gateway.url + "/predict", params={"model_version": version} if version else None,
            headers={"Authorization": f"Bearer {token}"},
            files={"file": ("x.jpg", payloads[i % len(payloads)])}, timeout=60)
        return response.status_code, response.json().get("model_version")

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def test_weighted_canary_gets_its_share_and_pins_are_never_diverted(stack):
    gateway, admin = stack
    token = get_token(gateway, DEMO_USER, DEMO_PASSWORD)
    rollout = start(gateway, admin, version="2.0", percent=20,
                    guard={"min_requests": 1000, "max_p95_ratio": None})
    assert (rollout["mode"], rollout["state"], rollout["percent"]) == ("canary", "active", 20)
    answers = predict_many(gateway, token, 500)
    assert {status for status, _ in answers} == {200}
    to_candidate = sum(version == "2.0" for _, version in answers)
    print(f"20 % canary: {to_candidate} of 500 unpinned requests went to 2.0")
    assert 70 <= to_candidate <= 130  # 20 % +- 6 %
    pinned = predict_many(gateway, token, 40, version="1.0")
    assert set(pinned) == {(200, "1.0")}

    arms = overview(gateway, admin)["rollout"]["arms"]
    assert arms["canary"]["requests"] == to_candidate
    assert arms["default"]["requests"] == 500 - to_candidate
    assert arms["canary"]["error_rate"] == 0 and arms["canary"]["p95_ms"] > 0

    ended = requests.delete(gateway.url + MODELS + "/rollout", headers=admin, timeout=10)
    assert ended.status_code == 200 and ended.json()["rollout"]["state"] == "aborted"
    time.sleep(MAX_AGE_SECONDS + 0.1)
    after = overview(gateway, admin)
    assert after["default_version"] == "1.0" and after["rollout"]["state"] == "aborted"
    assert set(predict_many(gateway, token, 40)) == {(200, "1.0")}


def test_sticky_canary_keeps_each_user_on_one_arm(stack):
    gateway, admin = stack
    start(gateway, admin, version="2.0", percent=50, sticky=True,
          guard={"min_requests": 1000, "max_p95_ratio": None})
    arms = {}
    for username, password in RIDERS:
        served = predict_many(gateway, get_token(gateway, username, password), 6, concurrency=3)
        assert {status for status, _ in served} == {200}
        arms[username] = {version for _, version in served}
    assert all(len(versions) == 1 for versions in arms.values()), arms
    on_candidate = sum(versions == {"2.0"} for versions in arms.values())
    print(f"sticky 50 %: {on_candidate} of 20 users on 2.0, each on one arm for 6 requests")
    assert 0 < on_candidate < 20


def noise_jpegs(count: int) -> list[bytes]:
    rng = np.random.default_rng(7)
    out = []
    for _ in range(count):
        buffer = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buffer, "JPEG")
        out.append(buffer.getvalue())
    return out


def test_shadow_agreement_matches_a_direct_comparison(stack):
    gateway, admin = stack
    token = get_token(gateway, DEMO_USER, DEMO_PASSWORD)
    photos = noise_jpegs(40)
    start(gateway, admin, mode="shadow", version="2.1", percent=100,
          guard={"min_requests": 1000, "max_p95_ratio": None})
    answers = predict_many(gateway, token, len(photos), concurrency=1, payloads=photos)
    assert set(answers) == {(200, "1.0")}  # the client only ever sees the default
    wait_for(lambda: overview(gateway, admin)["rollout"]["arms"]["shadow"]["compared"]
             == len(photos), timeout=120, what="every shadow copy compared", interval=0.5)
    shadow = overview(gateway, admin)["rollout"]["arms"]["shadow"]

    def top(version):
        tops = []
        for photo in photos:
            answer = requests.post(gateway.url + "/predict", params={"model_version": version},
                                   headers={"Authorization": f"Bearer {token}"},
                                   files={"file": ("x.jpg", photo)}, timeout=60).json()
            tops.append([p["class_id"] for p in answer["top_k"]])
        return tops

    default, candidate = top("1.0"), top("2.1")
    direct = sum(d[0] == c[0] for d, c in zip(default, candidate)) / len(photos)
    overlap = sum(len(set(d) & set(c)) for d, c in zip(default, candidate)) / len(photos)
    print(f"shadow: top-1 agreement {shadow['top1_agreement']:.3f} reported, {direct:.3f} "
          f"direct; top-5 overlap {shadow['mean_top5_overlap']:.2f} / {overlap:.2f}")
    assert 0 < direct < 1  # a comparison that can tell agreement from disagreement
    assert shadow["top1_agreement"] == pytest.approx(direct)
    assert shadow["mean_top5_overlap"] == pytest.approx(overlap)


@pytest.mark.parametrize("candidate,guard,reason", [
    ("2.0", {"min_requests": 10, "max_p95_ratio": 0.5}, "p95_ratio"),
    ("3.0-broken", {"min_requests": 10, "max_error_rate": 0.05}, "error_rate"),
], ids=["p95_bound_it_cannot_meet", "candidate_failing_at_inference"])
def test_guard_breach_rolls_back_without_failing_a_request(stack, candidate, guard, reason):
    gateway, admin = stack
    token = get_token(gateway, DEMO_USER, DEMO_PASSWORD)
    start(gateway, admin, version=candidate, percent=50, guard=guard)
    answers = predict_many(gateway, token, 120, concurrency=4)
    assert {status for status, _ in answers} == {200}, answers  # zero failed requests
    rollout = overview(gateway, admin)["rollout"]
    assert rollout["state"] == "rolled_back" and rollout["reason"].startswith(reason), rollout
    tried = rollout["arms"]["canary"]["requests"]
    print(f"{candidate}: rolled back after {tried} candidate requests ({rollout['reason']})")
    # Within its window: 10, plus what the other process and the clients had in flight.
    assert guard["min_requests"] <= tried <= guard["min_requests"] + 8
    assert set(answers[-20:]) == {(200, "1.0")}
    scrape = requests.get(gateway.url + "/metrics", timeout=10).text
    assert f'gateway_rollbacks_total{{reason="{reason}",version="{candidate}"}}' in scrape
    log = (gateway.log_path).read_text()
    assert '"event": "rollback"' in log and f'"version": "{candidate}"' in log


def test_promote_makes_the_candidate_the_default(stack):
    gateway, admin = stack
    start(gateway, admin, version="2.0", percent=10)
    promoted = requests.post(gateway.url + MODELS + "/rollout/promote", headers=admin, timeout=30)
    assert promoted.status_code == 200, promoted.text
    after = overview(gateway, admin)
    assert after["default_version"] == "2.0"
    assert (after["rollout"]["state"], after["rollout"]["version"]) == ("promoted", "2.0")
    assert [v["default"] for v in after["versions"] if v["version"] == "2.0"] == [True]
    again = requests.post(gateway.url + MODELS + "/rollout/promote", headers=admin, timeout=30)
    assert again.status_code == 409  # nothing active any more
    refused = requests.put(gateway.url + MODELS + "/rollout", headers=admin, timeout=30,
                           json={"version": "2.0", "percent": 10})
    assert refused.status_code == 409  # the default cannot be its own candidate
    # The operators' CLI reads the same rollout, under its new and its old command names.
    env = {**os.environ, "DATABASE_URL": gateway.env["DATABASE_URL"]}
    for command in ("rollout-status", "canary-status"):
        shown = subprocess.run([sys.executable, "-m", "gateway.cli.modelctl", command], env=env,
                               cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert shown.returncode == 0, shown.stderr
        assert json.loads(shown.stdout)["rollout"]["state"] == "promoted"


def infer(gateway, token, photos: list[bytes], request_id: str) -> requests.Response:
    tensor = {"name": "image", "datatype": "BYTES", "shape": [len(photos)],
              "data": [base64.b64encode(p).decode() for p in photos]}
    return requests.post(gateway.url + "/v2/models/classifier/infer", json={"inputs": [tensor]},
                         headers={"Authorization": f"Bearer {token}", "X-Request-ID": request_id},
                         timeout=60)


def rows_like(gateway, pattern: str) -> list[tuple]:
    engine = create_engine(gateway.env["DATABASE_URL"])
    with engine.connect() as connection:
        found = connection.execute(text(
            "SELECT request_id, status_code, arm, model_version FROM predictions "
            "WHERE request_id LIKE :pattern ORDER BY request_id"), {"pattern": pattern}).all()
    engine.dispose()
    return [tuple(row) for row in found]


def test_v2_inference_follows_the_same_rollouts(stack):
    gateway, admin = stack
    token = get_token(gateway, DEMO_USER, DEMO_PASSWORD)
    photos = [images.jpeg(), images.png()]
    start(gateway, admin, version="2.0", percent=100,
          guard={"min_requests": 1000, "max_p95_ratio": None})
    answer = infer(gateway, token, photos, "v2canary")
    assert answer.status_code == 200 and answer.json()["model_version"] == "2.0"
    assert rows_like(gateway, "v2canary%") == [("v2canary-0", 200, "canary", "2.0"),
                                               ("v2canary-1", 200, "canary", "2.0")]
    start(gateway, admin, mode="shadow", version="2.1", percent=100,
          guard={"min_requests": 1000, "max_p95_ratio": None})
    answer = infer(gateway, token, photos, "v2shadow")
    assert answer.status_code == 200 and answer.json()["model_version"] == "1.0"
    wait_for(lambda: len(rows_like(gateway, "v2shadow%")) == 4, timeout=120,
             what="the shadow copies' rows")
    assert rows_like(gateway, "v2shadow%") == [
        ("v2shadow-0", 200, "default", "1.0"), ("v2shadow-1", 200, "default", "1.0"),
        ("v2shadow-shadow-0", 200, "shadow", "2.1"), ("v2shadow-shadow-1", 200, "shadow", "2.1")]


def test_rollout_requests_are_validated(stack):
    gateway, admin = stack
    for body, status in [({"version": "2.0"}, 422), ({"version": "2.0", "percent": 0}, 422),
                         ({"version": "2.0", "percent": 10, "mode": "blue"}, 422),
                         ({"version": "2.0", "percent": 10, "guard": {"min_agreement": 0.9}}, 422),
                         ({"version": "9.9", "percent": 10}, 404),
                         ({"version": "1.0", "percent": 10}, 409)]:
        response = requests.put(gateway.url + MODELS + "/rollout", json=body, headers=admin,
                                timeout=30)
        assert response.status_code == status, (body, response.text)
    user = {"Authorization": f"Bearer {get_token(gateway, DEMO_USER, DEMO_PASSWORD)}"}
    assert requests.put(gateway.url + MODELS + "/rollout", headers=user, timeout=10,
                        json={"version": "2.0", "percent": 10}).status_code == 403


def history(gateway, admin, after: int) -> list[tuple]:
    """(action, actor, from, to, default after) of the model's records above id `after`,
    oldest first, read page by page as a client would."""
    records, before = [], None
    while True:
        page = requests.get(gateway.url + MODELS + "/history", headers=admin, timeout=30,
                            params={"limit": 3, **({"before": before} if before else {})})
        assert page.status_code == 200, page.text
        records += [r for r in page.json()["items"] if r["id"] > after]
        before = page.json()["next_before"]
        if before is None or before <= after:
            return [(r["action"], r["actor"], r["from_version"], r["to_version"],
                     r["default_version"]) for r in reversed(records)]


def verify_history(gateway) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli.modelctl", "--database-url",
                           gateway.env["DATABASE_URL"], "verify-history"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_history_records_a_session_and_its_chain_shows_a_hand_edit(stack):
    """Last in this module: it edits the stack's history by hand at its end."""
    gateway, admin = stack
    newest = requests.get(gateway.url + MODELS + "/history", params={"limit": 1},
                          headers=admin, timeout=30).json()["items"][0]["id"]
    token = get_token(gateway, DEMO_USER, DEMO_PASSWORD)
    start(gateway, admin, version="3.0-broken", percent=50,
          guard={"min_requests": 10, "max_error_rate": 0.05})
    predict_many(gateway, token, 60, concurrency=4)  # the guard rolls it back
    call = {"headers": admin, "timeout": 60}
    assert requests.put(gateway.url + MODELS + "/versions/2.1/default", **call).ok
    assert requests.put(gateway.url + MODELS + "/versions/2.0/default", **call).ok  # lower
    back = requests.post(gateway.url + MODELS + "/rollback", **call)  # the previous default
    assert back.status_code == 200 and back.json()["default_version"] == "2.1", back.text
    assert requests.delete(gateway.url + MODELS + "/versions/2.0", **call).ok
    back = requests.post(gateway.url + MODELS + "/rollback", **call)  # the one before it
    assert back.status_code == 200 and back.json()["default_version"] == "1.0", back.text
    again = requests.post(gateway.url + MODELS + "/versions", json={"archive": "classifier-2.0.mar"},
                          **call)
    assert again.status_code == 201, again.text
    assert history(gateway, admin, newest) == [
        ("rollout-start", ADMIN_USER, None, "3.0-broken", "1.0"),
        ("rollout-rollback", "guard", None, "3.0-broken", "1.0"),
        ("promote", ADMIN_USER, "1.0", "2.1", "2.1"),
        ("promote", ADMIN_USER, "2.1", "2.0", "2.0"),
        ("rollback", ADMIN_USER, "2.0", "2.1", "2.1"),
        ("retire", ADMIN_USER, "2.0", None, "2.1"),
        ("rollback", ADMIN_USER, "2.1", "1.0", "1.0"),
        ("register", ADMIN_USER, None, "2.0", "1.0")]
    exported = requests.get(gateway.url + MODELS + "/history/export",
                            params={"format": "csv", "after": newest}, **call)
    assert exported.status_code == 200 and exported.text.startswith("id,at,model_name,action")
    assert len(exported.text.splitlines()) == 1 + 8
    checked = verify_history(gateway)
    assert checked.returncode == 0 and json.loads(checked.stdout)["broken_at"] is None
    # Somebody with the database owner's rights goes round the append-only triggers.
    engine = create_engine(gateway.env["DATABASE_URL"])
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER model_history_no_update"))
        connection.execute(text("UPDATE model_history SET actor = 'someone else' "
                                "WHERE action = 'rollback'"))
    engine.dispose()
    tampered = verify_history(gateway)
    assert tampered.returncode == 5 and json.loads(tampered.stdout)["broken_at"] > newest
