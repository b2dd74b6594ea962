"""Tokens that can be taken back, per-user quotas and real client addresses, proven on a
real granian (two processes sharing Redis) in front of the real TorchServe."""

import shutil
import subprocess
import sys

import pytest
import requests

from devstack import images
from devstack.backends import Redis, required_or_skip
from devstack.servers import ROOT, GatewayServer
from devstack.stack import get_token, users_file_with

pytestmark = pytest.mark.e2e
PASSWORD = "a-good-password"


@pytest.fixture(scope="module")
def auth_stack(tmp_path_factory, torchserve, users_file, jwt_keys):
    required_or_skip(shutil.which("redis-server") is not None, "redis-server")
    base = tmp_path_factory.mktemp("auth")
    users = base / "users.json"
    store = users_file_with(users_file, users, [
        (name, PASSWORD) for name in ("pw_user", "role_user", "revoke_user", "logout_user",
                                      "quota_user", "other_user", "victim")])
    store.set_quota("quota_user", "3 per minute")
    redis = Redis().start()
    try:
        with GatewayServer(torchserve, base / "gateway", jwt_keys_file=jwt_keys,
                           users_file=users, gateway_workers=2, rate_limit_storage_uri=redis.url,
                           predict_rate_limit="8 per minute",
                           login_address_rate_limit="8 per minute",
                           trusted_proxy_hops=1).serving() as gateway:
            yield gateway, users
    finally:
        redis.stop()


def predict(gateway, token, **headers):
    return requests.post(gateway.url + "/predict", files={"file": ("a.jpg", images.jpeg())},
                         headers={"Authorization": f"Bearer {token}", **headers}, timeout=60)


def login(gateway, username, password=PASSWORD, client="10.0.0.1"):
    return requests.post(gateway.url + "/token", data={"username": username, "password": password},
                         headers={"X-Forwarded-For": client}, timeout=30)


def users_cli(users, *args, password=None):
    return subprocess.run([sys.executable, "-m", "gateway.cli.users", "--file", str(users), *args],
                          input=password and password + "\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=True)


@pytest.mark.parametrize("user, change", [
    ("pw_user", ("passwd", "pw_user")),
    ("role_user", ("add", "role_user", "--role", "admin")),
    ("revoke_user", ("revoke", "revoke_user")),
], ids=["passwd", "role_change", "revoke"])
def test_old_tokens_stop_at_once_after(auth_stack, user, change):
    gateway, users = auth_stack
    old = get_token(gateway, user, PASSWORD)
    assert predict(gateway, old).status_code == 200
    users_cli(users, *change, password=PASSWORD if change[0] != "revoke" else None)
    for _ in range(6):  # fresh connections: both worker processes answer
        refused = predict(gateway, old)
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"] == "invalid_token"
        assert refused.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"')
    assert predict(gateway, get_token(gateway, user, PASSWORD)).status_code == 200


def test_logout_revokes_the_token_in_every_process(auth_stack):
    gateway, _ = auth_stack
    token = get_token(gateway, "logout_user", PASSWORD)
    other = get_token(gateway, "logout_user", PASSWORD)
    out = requests.post(gateway.url + "/logout", headers={"Authorization": f"Bearer {token}"},
                        timeout=30)
    assert out.status_code == 200 and out.json() == {"revoked": True}
    for _ in range(10):
        answer = requests.get(gateway.url + "/predictions",
                              headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert answer.status_code == 401
        assert answer.json()["detail"] == "token has been revoked (logged out)"
    # Only that token: the user's other token still works.
    assert requests.get(gateway.url + "/predictions", timeout=30,
                        headers={"Authorization": f"Bearer {other}"}).status_code == 200
    assert "gateway_token_revocations_total{reason=\"logout\"} 1.0" in requests.get(
        gateway.url + "/metrics", timeout=30).text


def test_predict_quota_per_user(auth_stack):
    gateway, users = auth_stack
    assert "quota_user\tuser\t3 per minute" in users_cli(users, "list").stdout
    token = get_token(gateway, "quota_user", PASSWORD)
    assert [predict(gateway, token).status_code for _ in range(3)] == [200] * 3
    over = predict(gateway, token)
    assert over.status_code == 429, over.text
    assert 1 <= int(over.headers["Retry-After"]) <= 60
    assert over.headers["X-RateLimit-Limit"] == "3" and over.headers["X-RateLimit-Remaining"] == "0"
    assert over.headers["RateLimit-Limit"] == "3"
    assert over.json()["detail"] == "prediction quota of 3 per 1 minute exceeded, try again later"
    # Other users have their own quota (PREDICT_RATE_LIMIT, 8 per minute here).
    other = get_token(gateway, "other_user", PASSWORD)
    assert predict(gateway, other).status_code == 200
    assert 'gateway_rate_limited_total{route="/predict"}' in requests.get(
        gateway.url + "/metrics", timeout=30).text


def test_failed_logins_from_one_address_do_not_lock_out_another(auth_stack):
    gateway, _ = auth_stack
    attacker, victim_home = "203.0.113.7", "198.51.100.20"
    answers = [login(gateway, "victim", "wrong-password", attacker).status_code
               for _ in range(6)]
    assert answers == [401] * 5 + [429]
    # A client cannot pick its own address: with one trusted hop, the proxy's entry
    # (the last one) is the address, whatever the client put before it.
    spoofed = login(gateway, "victim", PASSWORD, f"{victim_home}, {attacker}")
    assert spoofed.status_code == 429
    assert login(gateway, "victim", PASSWORD, victim_home).status_code == 200


def test_failed_logins_per_address_across_usernames(auth_stack):
    gateway, _ = auth_stack
    sprayer = "203.0.113.99"
    answers = [login(gateway, f"spray{i}", "wrong-password", sprayer).status_code
               for i in range(9)]
    assert answers == [401] * 8 + [429]
    assert login(gateway, "other_user", PASSWORD, sprayer).status_code == 429
    assert login(gateway, "other_user", PASSWORD, "203.0.113.100").status_code == 200


def test_without_trusted_hops_forwarded_addresses_are_ignored(gateway):
    """The shared stack: TRUSTED_PROXY_HOPS=0, so X-Forwarded-For changes nothing."""
    answers = [requests.post(gateway.url + "/token", timeout=30,
                             headers={"X-Forwarded-For": f"192.0.2.{i}"},
                             data={"username": "xff_user", "password": "wrong-password"}
                             ).status_code for i in range(6)]
    assert answers == [401] * 5 + [429]
