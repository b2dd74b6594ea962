"""Our tokens, issued and verified: ES256 with the key ring (and its rotation), and the
HS256 fallback; expiry, keys, algorithms, audience, tampering, forgeries."""

import base64
import hashlib
import hmac
import json
import time

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from core.settings import Settings, SettingsError
from gateway.identity import tokens as tokens_module
from gateway.identity.claims import TokenError
from gateway.identity.keys import KeyFileError, KeyRing
from gateway.identity.principals import ROLE_SCOPES
from gateway.identity.tokens import Tokens

SECRET = "s" * 40
USER = ROLE_SCOPES["user"]


@pytest.fixture
def ring(tmp_path):
    ring = KeyRing(tmp_path / "keys.json", 1800)
    ring.ensure()
    return ring


@pytest.fixture(params=["ES256", "HS256"])
def signer(request, ring):
    """Tokens signing ES256 (keys file) or HS256 (JWT_SECRET alone)."""
    if request.param == "ES256":
        return Tokens(Settings(jwt_secret="", jwt_keys_file=str(ring.path)), ring)
    return Tokens(Settings(jwt_secret=SECRET), None)


def _b64(obj) -> str:
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _claims(settings: Settings, **changes) -> dict:
    now = int(time.time())
    return {"sub": "alice", "scope": "predict", "iat": now, "nbf": now, "exp": now + 60,
            "iss": settings.jwt_issuer, "aud": settings.jwt_audience, "jti": "x", **changes}


def test_round_trip_has_the_claims_and_nothing_about_passwords(signer):
    token = signer.issue("alice", USER)
    verified = signer.verify(token)
    assert verified.subject == "alice" and verified.scopes == USER and not verified.federated
    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"sub", "scope", "iat", "nbf", "exp", "iss", "aud", "jti"}
    assert claims["exp"] - claims["nbf"] == signer.settings.jwt_ttl_seconds
    assert claims["nbf"] <= claims["iat"] < claims["nbf"] + 1  # iat in milliseconds
    assert not any("pass" in key or "hash" in key for key in claims)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == ("ES256" if signer.ring else "HS256")
    assert ("kid" in header) == bool(signer.ring)


def test_a_token_of_the_hs256_release_keeps_its_role():
    settings = Settings(jwt_secret=SECRET)
    claims = {k: v for k, v in _claims(settings).items() if k != "scope"}
    verified = Tokens(settings, None).verify(jwt.encode({**claims, "role": "admin"}, SECRET))
    assert verified.scopes is None  # the user's role decides


def test_expired(signer):
    token = signer.issue("alice", USER, now=time.time() - signer.settings.jwt_ttl_seconds - 5)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token)


def test_another_key_is_refused(signer, tmp_path):
    if signer.ring:
        other = KeyRing(tmp_path / "other.json", 1800)
        other.ensure()
        token = Tokens(signer.settings, other).issue("alice", USER)
        match = "unknown or retired"
    else:
        token = Tokens(Settings(jwt_secret="x" * 40), None).issue("alice", USER)
        match = "signature"
    with pytest.raises(TokenError, match=match):
        signer.verify(token)


def test_alg_none_is_refused(signer):
    unsigned = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims(signer.settings))}."
    with pytest.raises(TokenError, match="algorithm is not allowed"):
        signer.verify(unsigned)


def test_hs256_signed_with_our_public_key_is_refused(ring):
    """The key-confusion attack (RFC 8725 §2.1): HMAC keyed with the public key's PEM."""
    settings = Settings(jwt_secret="", jwt_keys_file=str(ring.path))
    signer = ring.current().signer(time.time())
    pem = ring.current().private[signer.kid].public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64({"alg": "HS256", "typ": "JWT", "kid": signer.kid})
    body = _b64(_claims(settings))
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    with pytest.raises(TokenError, match="algorithm is not allowed"):
        Tokens(settings, ring).verify(f"{head}.{body}.{_b64(mac)}")


def test_wrong_audience_issuer_and_times():
    settings = Settings(jwt_secret=SECRET)
    check = Tokens(settings, None).verify
    with pytest.raises(TokenError, match="audience"):
        check(jwt.encode(_claims(settings, aud="other"), SECRET, "HS256"))
    with pytest.raises(TokenError, match="issuer"):
        check(jwt.encode(_claims(settings, iss="other"), SECRET, "HS256"))
    with pytest.raises(TokenError, match="not valid yet"):
        check(jwt.encode(_claims(settings, nbf=int(time.time()) + 600), SECRET, "HS256"))
    missing = _claims(settings)
    del missing["exp"]
    with pytest.raises(TokenError, match="lacks the 'exp' claim"):
        check(jwt.encode(missing, SECRET, "HS256"))
    with pytest.raises(TokenError, match="algorithm is not allowed"):
        check(jwt.encode(_claims(settings), SECRET * 2, "HS512"))


def test_tampered_payload(signer):
    header, payload, signature = signer.issue("alice", USER).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["scope"] = " ".join(ROLE_SCOPES["admin"])
    with pytest.raises(TokenError, match="signature"):
        signer.verify(f"{header}.{_b64(claims)}.{signature}")


def test_garbage(signer):
    for token in ("", "abc", "a.b.c", "ey.ey.ey"):
        with pytest.raises(TokenError, match="malformed"):
            signer.verify(token)


def test_rotation_keeps_old_tokens_until_they_expire_then_retire_drops_the_key(ring):
    settings = Settings(jwt_secret="", jwt_keys_file=str(ring.path), jwt_ttl_seconds=1800)
    tokens = Tokens(settings, ring)
    old_kid = ring.current().signer(time.time()).kid
    old = tokens.issue("alice", USER)
    rotated_at = time.time()
    new_kid = ring.rotate(now=rotated_at).kid
    new = tokens.issue("alice", USER)
    assert jwt.get_unverified_header(new)["kid"] == new_kid != old_kid
    assert tokens.verify(old).subject == tokens.verify(new).subject == "alice"
    assert {k["kid"] for k in ring.current().jwks(time.time())["keys"]} == {old_kid, new_kid}
    # Before the old key's last token expires, a plain retire keeps it; after, it goes.
    assert ring.retire(now=rotated_at + 1799) == []
    assert ring.retire(now=rotated_at + 1801) == [old_kid]
    assert [k["kid"] for k in ring.current().jwks(time.time())["keys"]] == [new_kid]
    with pytest.raises(TokenError, match="unknown or retired"):
        tokens.verify(old)
    assert tokens.verify(new).subject == "alice"


def test_a_staged_rotation_publishes_the_key_before_it_signs(ring):
    now = time.time()
    old = ring.current().signer(now).kid
    new = ring.rotate(now=now, after=120).kid
    keys = ring.current()
    assert keys.signer(now + 60).kid == old and keys.signer(now + 121).kid == new
    assert {k["kid"] for k in keys.jwks(now)["keys"]} == {old, new}
    assert keys.verifier(new, now) is not None  # replicas verify it before anyone signs
    assert ring.retire(now=now + 120 + 1799) == []
    assert ring.retire(now=now + 120 + 1801) == [old]
    with pytest.raises(KeyFileError, match="rotate first"):
        ring.retire(new)


def test_a_compromised_key_is_retired_at_once_but_never_the_signer(ring):
    tokens = Tokens(Settings(jwt_secret="", jwt_keys_file=str(ring.path)), ring)
    first = ring.current().signer(time.time()).kid
    with pytest.raises(KeyFileError, match="rotate first"):
        ring.retire(first)
    token = tokens.issue("alice", USER)
    assert tokens.verify(token).subject == "alice"  # remembered now
    ring.rotate()
    assert ring.retire(first) == [first]
    with pytest.raises(TokenError, match="unknown or retired"):
        tokens.verify(token)
    with pytest.raises(KeyFileError, match="no key"):
        ring.retire("nope")


def test_a_verified_token_is_remembered_until_it_expires(signer, monkeypatch):
    checks = []
    real_decode = tokens_module.decode
    monkeypatch.setattr(tokens_module, "decode", lambda *a: checks.append(1) or real_decode(*a))
    ttl = signer.settings.jwt_ttl_seconds
    token = signer.issue("alice", USER, now=time.time() - ttl + 1.5)  # expires in 0.5-1.5 s
    expires_at = jwt.decode(token, options={"verify_signature": False})["exp"]
    assert signer.verify(token) == signer.verify(token)
    assert len(checks) == 1  # the repeat skipped the signature check
    while time.time() < expires_at:  # the token's own expiry, no later than 1.5 s from now
        time.sleep(0.05)
    with pytest.raises(TokenError, match="expired"):
        signer.verify(token)


def test_the_keys_file_is_private_and_public_keys_only_are_published(ring):
    assert ring.path.stat().st_mode & 0o077 == 0
    [jwk] = ring.current().jwks(time.time())["keys"]
    assert jwk["kty"] == "EC" and jwk["crv"] == "P-256" and jwk["alg"] == "ES256"
    assert "d" not in jwk


def test_settings_refuse_a_weak_or_missing_secret():
    with pytest.raises(SettingsError, match="Neither JWT_KEYS_FILE nor JWT_SECRET"):
        Settings.from_env({})
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env({"JWT_SECRET": "short"})
    with pytest.raises(SettingsError, match="at least 32 bytes"):
        Settings.from_env({"JWT_SECRET": "short", "JWT_KEYS_FILE": "keys.json"})
    with pytest.raises(SettingsError, match="not a valid int"):
        Settings.from_env({"JWT_SECRET": SECRET, "JWT_TTL_SECONDS": "soon"})
    settings = Settings.from_env({"JWT_SECRET": SECRET, "JWT_TTL_SECONDS": "60"})
    assert settings.jwt_ttl_seconds == 60
    assert Settings.from_env({"JWT_KEYS_FILE": "keys.json"}).jwt_secret == ""
