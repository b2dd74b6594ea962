"""JWT issue/verify: expiry, keys, algorithms, audience, tampering."""

import base64
import json
import time

import jwt
import pytest

from gateway import tokens
from gateway.settings import Settings, SettingsError

SECRET = "s" * 40


@pytest.fixture
def settings():
    return Settings(jwt_secret=SECRET)


def test_round_trip_has_the_claims_and_nothing_about_passwords(settings):
    claims = tokens.verify(settings, tokens.issue(settings, "alice", "user"))
    assert set(claims) == {"sub", "role", "iat", "nbf", "exp", "iss", "aud", "jti"}
    assert claims["sub"] == "alice" and claims["role"] == "user"
    assert claims["exp"] - claims["nbf"] == settings.jwt_ttl_seconds
    assert claims["nbf"] <= claims["iat"] < claims["nbf"] + 1  # iat in milliseconds
    assert not any("pass" in key or "hash" in key for key in claims)
    assert not any(isinstance(v, str) and v.startswith("$2") for v in claims.values())


def test_expired(settings):
    token = tokens.issue(settings, "alice", "user", now=time.time() - settings.jwt_ttl_seconds - 5)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify(settings, token)


def test_wrong_key(settings):
    token = tokens.issue(Settings(jwt_secret="x" * 40), "alice", "user")
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(settings, token)


def _unsigned(claims: dict) -> str:
    def part(obj):
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def test_alg_none_is_refused(settings):
    claims = tokens.verify(settings, tokens.issue(settings, "alice", "admin"))
    with pytest.raises(tokens.TokenError, match="algorithm is not allowed"):
        tokens.verify(settings, _unsigned(claims))


def test_wrong_audience_and_issuer(settings):
    now = int(time.time())
    base = {"sub": "a", "role": "user", "iat": now, "nbf": now, "exp": now + 60,
            "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "x"}
    with pytest.raises(tokens.TokenError, match="audience"):
        tokens.verify(settings, jwt.encode({**base, "aud": "other"}, SECRET, "HS256"))
    with pytest.raises(tokens.TokenError, match="issuer"):
        tokens.verify(settings, jwt.encode({**base, "iss": "other"}, SECRET, "HS256"))
    with pytest.raises(tokens.TokenError, match="not valid yet"):
        tokens.verify(settings, jwt.encode({**base, "nbf": now + 600}, SECRET, "HS256"))
    missing = dict(base)
    del missing["exp"]
    with pytest.raises(tokens.TokenError, match="lacks the 'exp' claim"):
        tokens.verify(settings, jwt.encode(missing, SECRET, "HS256"))
    with pytest.raises(tokens.TokenError, match="algorithm is not allowed"):
        tokens.verify(settings, jwt.encode(base, SECRET * 2, "HS512"))


def test_tampered_payload(settings):
    header, payload, signature = tokens.issue(settings, "alice", "user").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["role"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(tokens.TokenError, match="signature"):
        tokens.verify(settings, f"{header}.{forged}.{signature}")


def test_garbage(settings):
    for token in ("", "abc", "a.b.c", "ey.ey.ey"):
        with pytest.raises(tokens.TokenError, match="malformed"):
            tokens.verify(settings, token)


def test_settings_refuse_a_weak_or_missing_secret():
    with pytest.raises(SettingsError, match="JWT_SECRET is not set"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env({"JWT_SECRET": "short"})
    with pytest.raises(SettingsError, match="not a valid int"):
        Settings.from_env({"JWT_SECRET": SECRET, "JWT_TTL_SECONDS": "soon"})
    settings = Settings.from_env({"JWT_SECRET": SECRET, "JWT_TTL_SECONDS": "60"})
    assert settings.jwt_ttl_seconds == 60
