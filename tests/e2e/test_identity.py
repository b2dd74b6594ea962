"""Our own identity, on real granian (two processes) in front of the real TorchServe:
signing keys rotated and retired under load, the JWKS read by a verifier that is not us,
service accounts by client credentials, and the scope each route needs."""

import os
import shutil
import subprocess
import sys
import threading
import time

import jwt
import pytest
import requests
from joserfc import jwt as jose_jwt
from joserfc.jwk import KeySet

from devstack import images
from devstack.backends import Redis, required_or_skip
from devstack.servers import ROOT, GatewayServer
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, DEMO_USER, get_token, users_file_with
from devstack.waiting import wait_for
from gateway.identity.keys import KeyRing

pytestmark = pytest.mark.e2e
PASSWORD = "a-good-password"
TTL_S = 12  # short, so that a rotated-out key's last token expires within the test


def cli(module: str, *args) -> str:
    """The CLI, reading the gateways' token lifetime as an operator's shell would."""
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True,
                          text=True, cwd=ROOT, timeout=60, check=True,
                          env={**os.environ, "JWT_TTL_SECONDS": str(TTL_S)}).stdout


@pytest.fixture(scope="module")
def identity(tmp_path_factory, torchserve, users_file):
    required_or_skip(shutil.which("redis-server") is not None, "redis-server")
    base = tmp_path_factory.mktemp("identity")
    users = base / "users.json"
    users_file_with(users_file, users, [("quota_sa_owner", PASSWORD)])
    keys = base / "jwt-keys.json"
    cli("gateway.cli.keys", "--file", str(keys), "rotate")
    redis = Redis().start()
    try:
        with GatewayServer(torchserve, base / "gateway", jwt_keys_file=keys, users_file=users,
                           jwt_ttl_seconds=TTL_S, gateway_workers=2,
                           rate_limit_storage_uri=redis.url,
                           predict_rate_limit="100000 per minute").serving() as gateway:
            yield gateway, users, keys
    finally:
        redis.stop()


def predict(gateway, token):
    return requests.post(gateway.url + "/predict", files={"file": ("a.jpg", images.jpeg())},
                         headers={"Authorization": f"Bearer {token}"}, timeout=60)


def client_token(gateway, client_id, secret, basic=True, **form):
    auth = (client_id, secret) if basic else None
    data = {"grant_type": "client_credentials", **form}
    if not basic:
        data.update(client_id=client_id, client_secret=secret)
    return requests.post(gateway.url + "/token", data=data, auth=auth, timeout=30)


def add_client(users, client_id, scopes) -> str:
    out = cli("gateway.cli.users", "--file", str(users), "add-client", client_id, "--scopes", scopes)
    return out.rsplit(": ", 1)[1].strip()


def test_metadata_and_a_verifier_that_is_not_us(identity):
    gateway, _, keys = identity
    metadata = requests.get(gateway.url + "/.well-known/openid-configuration", timeout=30).json()
    assert metadata["issuer"] == "image-classifier-gateway"
    assert metadata["token_endpoint"] == gateway.url + "/token"
    assert set(metadata["grant_types_supported"]) == {"password", "client_credentials"}
    assert "models:admin" in metadata["scopes_supported"]
    jwks = requests.get(metadata["jwks_uri"], timeout=30).json()
    assert [k["kid"] for k in jwks["keys"]] == [KeyRing(keys, TTL_S).current().signer(time.time()).kid]
    assert all("d" not in k for k in jwks["keys"])
    token = get_token(gateway, DEMO_USER, "tryClassifier")
    # joserfc, not PyJWT, with nothing but the published JWKS.
    checked = jose_jwt.decode(token, KeySet.import_key_set(jwks), algorithms=["ES256"])
    assert checked.header["kid"] == jwks["keys"][0]["kid"]
    assert checked.claims["sub"] == DEMO_USER and checked.claims["scope"] == "predict predictions:read"
    # Our iat carries milliseconds (RFC 7519 allows it); joserfc's clock is whole seconds.
    jose_jwt.JWTClaimsRegistry(leeway=1, iss={"essential": True, "value": metadata["issuer"]},
                               aud={"essential": True, "value": "image-classifier"}
                               ).validate(checked.claims)


def test_rotation_and_retirement_under_load_fail_no_request(identity):
    """4 clients keep calling /predict, each logging in again before its token expires,
    while `keys rotate` runs and later `keys retire` drops the old key: 0 failures."""
    gateway, _, keys = identity
    stop, failures, done, kids = threading.Event(), [], [], set()

    def client():
        token, got = None, 0.0
        while not stop.is_set():
            if token is None or time.monotonic() - got > TTL_S / 3:
                token, got = get_token(gateway, DEMO_USER, "tryClassifier"), time.monotonic()
                kids.add(jwt.get_unverified_header(token)["kid"])
            answer = predict(gateway, token)
            (done if answer.status_code == 200 else failures).append(answer.status_code)

    first = KeyRing(keys, TTL_S).current().signer(time.time()).kid
    old_token = get_token(gateway, DEMO_USER, "tryClassifier")
    threads = [threading.Thread(target=client) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: len(done) >= 4, timeout=120, what="predictions before the rotation")
        new = cli("gateway.cli.keys", "--file", str(keys), "rotate").split()[-1]
        wait_for(lambda: new in kids, timeout=120, what="a token of the new key")
        assert predict(gateway, old_token).status_code == 200  # the old key still verifies
        time.sleep(TTL_S + 1)  # every token of the old key has expired
        assert cli("gateway.cli.keys", "--file", str(keys), "retire").split() == ["retired", first]
        count = len(done)
        wait_for(lambda: len(done) >= count + 4, timeout=120, what="predictions after retire")
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)
    assert failures == [] and {first, new} <= kids
    listed = cli("gateway.cli.keys", "--file", str(keys), "list")
    assert new in listed and first not in listed and "signing" in listed
    jwks = requests.get(gateway.url + "/.well-known/jwks.json", timeout=30).json()
    assert [k["kid"] for k in jwks["keys"]] == [new]


def test_a_compromised_key_retired_at_once_refuses_its_live_tokens(identity):
    gateway, _, keys = identity
    token = get_token(gateway, DEMO_USER, "tryClassifier")
    suspect = jwt.get_unverified_header(token)["kid"]
    cli("gateway.cli.keys", "--file", str(keys), "rotate")
    assert predict(gateway, token).status_code == 200
    cli("gateway.cli.keys", "--file", str(keys), "retire", suspect)
    for _ in range(4):  # both worker processes
        refused = predict(gateway, token)
        assert refused.status_code == 401
        assert refused.json()["detail"] == "token's signing key is unknown or retired"
    assert predict(gateway, get_token(gateway, DEMO_USER, "tryClassifier")).status_code == 200


def test_service_accounts_get_tokens_by_client_credentials_only(identity):
    gateway, users, _ = identity
    secret = add_client(users, "batch-job", "predict")
    for basic in (True, False):
        answer = client_token(gateway, "batch-job", secret, basic=basic)
        assert answer.status_code == 200, answer.text
        assert answer.json()["scope"] == "predict" and answer.json()["token_type"] == "bearer"
        assert predict(gateway, answer.json()["access_token"]).status_code == 200
    wrong = client_token(gateway, "batch-job", secret + "x")
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    # A service account never logs in by password, nor a person by client credentials.
    by_password = requests.post(gateway.url + "/token", timeout=30,
                                data={"username": "batch-job", "password": secret})
    assert by_password.status_code == 401 and by_password.json()["error"] == "invalid_grant"
    person = client_token(gateway, DEMO_USER, "tryClassifier")
    assert person.status_code == 401 and person.json()["error"] == "invalid_client"
    unknown = client_token(gateway, "batch-job", secret, scope="predict telepathy")
    assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_scope"


def scoped(gateway, token, method, path, **kwargs):
    return requests.request(method, gateway.url + path, timeout=60,
                            headers={"Authorization": f"Bearer {token}"}, **kwargs)


ROUTES = {  # scope -> a call that needs it, with what a holder gets back
    "predict": ("POST", "/predict", {"files": {"file": ("a.jpg", images.jpeg())}}, 200),
    "predictions:read": ("GET", "/predictions", {}, 200),
    "predictions:admin": ("GET", "/predictions/export", {}, 200),
    "models:admin": ("GET", "/models/classifier", {}, 200),
}


@pytest.mark.parametrize("scope", list(ROUTES))
def test_each_route_needs_its_scope(identity, scope):
    gateway, users, _ = identity
    method, path, kwargs, status = ROUTES[scope]
    holder = add_client(users, f"has-{scope.replace(':', '-')}", scope)
    others = " ".join(s for s in ROUTES if s != scope)
    lacking = add_client(users, f"lacks-{scope.replace(':', '-')}", others)
    token = client_token(gateway, f"has-{scope.replace(':', '-')}", holder).json()["access_token"]
    assert scoped(gateway, token, method, path, **kwargs).status_code == status
    token = client_token(gateway, f"lacks-{scope.replace(':', '-')}", lacking).json()["access_token"]
    refused = scoped(gateway, token, method, path, **kwargs)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"] == "insufficient_scope"
    assert refused.headers["WWW-Authenticate"] == (
        f'Bearer error="insufficient_scope", scope="{scope}"')


def test_a_user_token_narrowed_by_scope_and_roles_keep_their_routes(identity):
    gateway, _, _ = identity
    narrowed = requests.post(gateway.url + "/token", timeout=30, data={
        "username": DEMO_USER, "password": "tryClassifier", "scope": "predict"}).json()
    assert narrowed["scope"] == "predict"
    assert predict(gateway, narrowed["access_token"]).status_code == 200
    assert scoped(gateway, narrowed["access_token"], "GET", "/predictions").status_code == 403
    user = get_token(gateway, DEMO_USER, "tryClassifier")
    assert scoped(gateway, user, "GET", "/predictions").status_code == 200
    assert scoped(gateway, user, "GET", "/models/classifier").status_code == 403
    admin = get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
    assert scoped(gateway, admin, "GET", "/models/classifier").status_code == 200
    # Asking for more than the role holds gives what it holds, never more.
    asked = requests.post(gateway.url + "/token", timeout=30, data={
        "username": DEMO_USER, "password": "tryClassifier", "scope": "predict models:admin"})
    assert asked.json()["scope"] == "predict"


def test_a_service_accounts_quota_revocation_and_log_rows(identity):
    gateway, users, _ = identity
    secret = add_client(users, "quota-job", "predict predictions:read")
    cli("gateway.cli.users", "--file", str(users), "quota", "quota-job", "2 per minute")
    token = client_token(gateway, "quota-job", secret).json()["access_token"]
    assert [predict(gateway, token).status_code for _ in range(3)] == [200, 200, 429]
    rows = scoped(gateway, token, "GET", "/predictions").json()["items"]
    assert {r["username"] for r in rows} == {"quota-job"} and len(rows) >= 2
    cli("gateway.cli.users", "--file", str(users), "revoke", "quota-job")
    revoked = scoped(gateway, token, "GET", "/predictions")
    assert revoked.status_code == 401 and revoked.json()["error"] == "invalid_token"
