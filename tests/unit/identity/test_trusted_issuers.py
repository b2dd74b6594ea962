"""Trusted issuers without a network: what their config may say, how their roles map to
our scopes, and how often their keys are fetched (the real provider is in
tests/e2e/test_federation.py)."""

import json

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from core.settings import Settings, SettingsError
from gateway.identity.claims import IssuerUnavailable, TokenError
from gateway.identity.federation import IssuerConfigError, IssuerKeys, TrustedIssuer, TrustedIssuers
from gateway.identity.tokens import Tokens

ISSUER = "https://login.example.com/realms/ml"


@pytest.mark.parametrize("changes,message", [
    ({"algorithms": ("HS256",)}, "asymmetric"),
    ({"algorithms": ("none",)}, "asymmetric"),
    ({"algorithms": ()}, "asymmetric"),
    ({"roles": {"ml": "superuser"}}, "unknown roles"),
    ({"audience": ""}, "needs 'issuer' and 'audience'"),
])
def test_an_issuer_config_that_could_be_abused_is_refused(changes, message):
    with pytest.raises(IssuerConfigError, match=message):
        TrustedIssuer(**{"issuer": ISSUER, "audience": "urn:ic", **changes})


def test_a_bad_issuers_file_stops_the_start(tmp_path):
    path = tmp_path / "issuers.json"
    path.write_text(json.dumps([{"issuer": ISSUER, "audience": "a", "algorithms": ["HS256"]}]))
    with pytest.raises(SettingsError, match="TRUSTED_ISSUERS_FILE: .*asymmetric"):
        Tokens.from_settings(Settings(jwt_secret="s" * 40, trusted_issuers_file=str(path)))
    path.write_text(json.dumps([{"issuer": ISSUER, "audience": "a", "colour": "red"}]))
    with pytest.raises(SettingsError, match="unexpected keyword argument 'colour'"):
        Tokens.from_settings(Settings(jwt_secret="s" * 40, trusted_issuers_file=str(path)))


@pytest.mark.parametrize("claims,config,scopes", [
    ({"groups": ["ml-users"]}, {}, ("predict", "predictions:read")),
    ({"groups": ["ml-admins", "other"]}, {}, ("predict", "predictions:read",
                                              "predictions:admin", "models:admin")),
    ({"groups": "ml-users other"}, {}, ("predict", "predictions:read")),
    ({"groups": ["other"]}, {}, ()),
    ({}, {"default_role": "user"}, ("predict", "predictions:read")),
    ({"realm_access": {"roles": ["ml-admins"]}}, {"roles_claim": "realm_access.roles"},
     ("predict", "predictions:read", "predictions:admin", "models:admin")),
    ({"scope": "predict telepathy openid"}, {}, ("predict",)),
    ({"groups": [{"not": "a string"}]}, {}, ()),
])
def test_roles_and_scope_claims_map_to_our_scopes(claims, config, scopes):
    issuer = TrustedIssuer(ISSUER, "urn:ic", **{"roles_claim": "groups", "roles": {
        "ml-users": "user", "ml-admins": "admin"}, **config})
    assert issuer.scopes(claims) == scopes


@pytest.mark.parametrize("claims, models", [
    ({"ml_models": ["mobilenet", "resnet50"]}, ("mobilenet", "resnet50")),
    ({"ml_models": "mobilenet resnet50"}, ("mobilenet", "resnet50")),
    ({"ml_models": ["mobilenet", 7]}, ("mobilenet",)),
    ({}, ()),  # configured but absent: no model at all, never every model
    ({"ml_models": {"not": "a list"}}, ()),
])
def test_a_models_claim_limits_the_subject_to_the_models_it_names(claims, models):
    assert TrustedIssuer(ISSUER, "urn:ic", models_claim="ml_models").models(claims) == models
    assert TrustedIssuer(ISSUER, "urn:ic").models(claims) is None  # no claim: every model


class FakeSession:
    """The provider's discovery and JWKS documents, counted; `down` fails every call."""

    def __init__(self, jwks: dict):
        self.jwks, self.down, self.fetches = jwks, False, 0

    def get(self, url, timeout):
        import requests

        if self.down:
            raise requests.ConnectionError("provider down")
        body = ({"issuer": ISSUER, "jwks_uri": ISSUER + "/jwks"}
                if url.endswith("openid-configuration") else self.jwks)
        self.fetches += url.endswith("/jwks")
        answer = requests.Response()
        answer.status_code, answer._content = 200, json.dumps(body).encode()
        return answer


def _jwk(kid: str) -> dict:
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    return {**jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True), "kid": kid, "alg": "ES256"}


def test_unknown_kids_refetch_at_most_once_per_interval_and_outages_keep_the_keys(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr("gateway.identity.federation.time.monotonic", lambda: clock[0])
    session = FakeSession({"keys": [_jwk("a")]})
    keys = IssuerKeys(TrustedIssuer(ISSUER, "urn:ic", min_refetch_seconds=10), session)
    assert keys.key("a").key_id == "a" and session.fetches == 1
    for i in range(50):
        with pytest.raises(TokenError, match="not among its issuer's keys"):
            keys.key(f"made-up-{i}")
    assert session.fetches == 1  # within 10 s of the last fetch: none more
    session.jwks = {"keys": [_jwk("a"), _jwk("b")]}  # the provider rotates
    clock[0] += 10
    assert keys.key("b").key_id == "b" and session.fetches == 2
    session.down = True
    clock[0] += 400  # stale, and the refetch fails: the keys it had still verify
    assert keys.key("a").key_id == "a"


def test_no_keys_at_all_is_unavailable_not_a_bad_token():
    session = FakeSession({})
    session.down = True
    keys = IssuerKeys(TrustedIssuer(ISSUER, "urn:ic"), session)
    with pytest.raises(IssuerUnavailable):
        keys.key("a")


def test_only_configured_issuers_are_trusted():
    issuers = TrustedIssuers([TrustedIssuer(ISSUER, "urn:ic")])
    assert issuers.trusts(ISSUER)
    assert not issuers.trusts(ISSUER + "/") and not issuers.trusts(None) and not issuers.trusts(1)
