"""Tokens from the company's OpenID provider: a real one (oidc-provider from npm, OpenID
Certified) issues them by client credentials, and the real gateway and TorchServe take
them, map their groups to roles, and refuse every forgery with a 401."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import sys
import time

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from devstack import images
from devstack.backends import (OpenIdProvider, openid_provider_available, required_or_skip,
                               signing_jwk)
from devstack.servers import ROOT, GatewayServer
from devstack.waiting import wait_for

pytestmark = pytest.mark.e2e
AUDIENCE = "urn:image-classifier"  # resource indicators are URIs
REFETCH_S = 2  # the issuer's bound on refetches for an unknown kid, short for the test
CLIENTS = {"ml-bot": (["ml-users"], 600), "admin-bot": (["ml-admins"], 600),
           "nobody-bot": ([], 600), "short-bot": (["ml-users"], 1),
           "erased-bot": (["ml-users"], 600)}


@pytest.fixture(scope="module")
def federation(tmp_path_factory, torchserve, users_file, jwt_keys):
    required_or_skip(openid_provider_available(), "node with tests/support/oidc/node_modules "
                     "(make test installs it)")
    base = tmp_path_factory.mktemp("federation")
    provider = OpenIdProvider(base, CLIENTS, {AUDIENCE: "predict",
                                              "urn:someone-else": "predict"})
    first = signing_jwk("provider-key-1")
    provider.start([first])
    issuers = base / "issuers.json"
    issuers.write_text(json.dumps([{
        "issuer": provider.issuer, "audience": AUDIENCE, "roles_claim": "groups",
        "roles": {"ml-users": "user", "ml-admins": "admin"}, "algorithms": ["ES256"],
        "min_refetch_seconds": REFETCH_S}]))
    try:
        with GatewayServer(torchserve, base / "gateway", jwt_keys_file=jwt_keys,
                           users_file=users_file,
                           trusted_issuers_file=issuers).serving() as gateway:
            yield gateway, provider, first
    finally:
        provider.stop()


def call(gateway, token, method="POST", path="/predict"):
    kwargs = {"files": {"file": ("a.jpg", images.jpeg())}} if path == "/predict" else {}
    return requests.request(method, gateway.url + path, timeout=60,
                            headers={"Authorization": f"Bearer {token}"}, **kwargs)


def test_provider_tokens_are_accepted_with_their_groups_as_roles(federation):
    gateway, provider, _ = federation
    token = provider.token("ml-bot")
    answer = call(gateway, token)
    assert answer.status_code == 200, answer.text
    subject = f"{provider.issuer}#ml-bot"
    assert answer.json()["username"] == subject
    rows = call(gateway, token, "GET", "/predictions").json()["items"]
    assert rows and {r["username"] for r in rows} == {subject}
    assert call(gateway, token, "GET", "/models/classifier").status_code == 403
    admin = provider.token("admin-bot")
    assert call(gateway, admin, "GET", "/models/classifier").status_code == 200
    nobody = call(gateway, provider.token("nobody-bot"))
    assert nobody.status_code == 403 and nobody.json()["error"] == "insufficient_scope"
    # Revocation works as for our own tokens: /logout denies this token everywhere.
    assert call(gateway, token, "POST", "/logout").status_code == 200
    assert call(gateway, token).status_code == 401


def test_erasing_a_federated_user_deletes_their_rows_and_ends_their_tokens(federation):
    gateway, provider, _ = federation
    token = provider.token("erased-bot")
    assert call(gateway, token).status_code == 200
    subject = f"{provider.issuer}#erased-bot"
    erased = subprocess.run(
        [sys.executable, "-m", "gateway.cli.users", "erase", subject], cwd=ROOT, timeout=60,
        capture_output=True, text=True, check=True,
        env={**os.environ, "DATABASE_URL": gateway.env["DATABASE_URL"]})
    assert f"erased 1 prediction-log rows of {subject!r}" in erased.stdout
    refused = call(gateway, token)
    assert refused.status_code == 401 and "erased" in refused.json()["detail"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _forge(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def attacks(provider, first_jwk):
    """name -> (token, the gateway's detail)."""
    genuine = provider.token("ml-bot")
    header = jwt.get_unverified_header(genuine)
    claims = jwt.decode(genuine, options={"verify_signature": False})
    public_pem = jwt.algorithms.ECAlgorithm.from_jwk(json.dumps(first_jwk)).public_key(
        ).public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    stranger = ec.generate_private_key(ec.SECP256R1())
    short = provider.token("short-bot")
    time.sleep(2)  # its lifetime is 1 s
    return {
        "wrong_audience": (provider.token("ml-bot", resource="urn:someone-else"),
                           "token has the wrong audience"),
        "wrong_issuer": (jwt.encode({**claims, "iss": "http://127.0.0.1:9/evil"}, stranger,
                                    "ES256", headers={"kid": header["kid"]}),
                         "token has the wrong issuer"),
        "expired": (short, "token has expired"),
        "unknown_kid": (jwt.encode(claims, stranger, "ES256", headers={"kid": "not-published"}),
                        "token's signing key is not among its issuer's keys"),
        "known_kid_other_key": (jwt.encode(claims, stranger, "ES256",
                                           headers={"kid": header["kid"]}),
                                "token signature is invalid"),
        "hs256_with_public_key": (_forge({**header, "alg": "HS256"}, claims,
                                         lambda data: hmac.new(public_pem, data,
                                                               hashlib.sha256).digest()),
                                  "token algorithm is not allowed (only ES256)"),
        "alg_none": (_forge({"alg": "none", "typ": "JWT"}, claims, lambda data: b""),
                     "token algorithm is not allowed (only ES256)"),
        "groups_raised": (genuine.split(".")[0] + "." + _b64(json.dumps(
            {**claims, "groups": ["ml-admins"]}).encode()) + "." + genuine.split(".")[2],
                          "token signature is invalid"),
    }


def test_every_forgery_is_a_401_with_the_rfc_6750_fields(federation):
    gateway, provider, first = federation
    for name, (token, detail) in attacks(provider, first).items():
        answer = call(gateway, token)
        assert answer.status_code == 401, (name, answer.text)
        assert answer.json() == {"detail": detail, "error": "invalid_token",
                                 "error_description": detail}, name
        assert answer.headers["WWW-Authenticate"].startswith('Bearer error="invalid_token"'), name


def test_unknown_kids_refetch_the_keys_a_bounded_number_of_times(federation):
    gateway, provider, _ = federation
    claims = jwt.decode(provider.token("ml-bot"), options={"verify_signature": False})
    stranger = ec.generate_private_key(ec.SECP256R1())
    before, started = provider.jwks_fetches(), time.monotonic()
    for i in range(30):
        made_up = jwt.encode(claims, stranger, "ES256", headers={"kid": f"made-up-{i}"})
        assert call(gateway, made_up).status_code == 401
    elapsed = time.monotonic() - started
    assert provider.jwks_fetches() - before <= 1 + int(elapsed / REFETCH_S)


def test_the_providers_new_key_is_accepted_after_one_refetch(federation):
    gateway, provider, first = federation
    old_token = provider.token("ml-bot")
    provider.stop()
    provider.start([signing_jwk("provider-key-2"), first])  # it rotates: a new key signs
    new_token = provider.token("ml-bot")
    assert jwt.get_unverified_header(new_token)["kid"] == "provider-key-2"
    wait_for(lambda: call(gateway, new_token).status_code == 200, timeout=60,
             what="the gateway accepting the provider's new key")
    assert provider.jwks_fetches() == 1  # this provider process served its keys once
    assert call(gateway, old_token).status_code == 200  # the old key still verifies
