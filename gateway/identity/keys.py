"""The gateway's token signing keys (ES256, each with an id); gateway.cli.keys manages them.

The keys live in one JSON file (JWT_KEYS_FILE, 0600; a Secret in Kubernetes), shared by
every gateway process and replica and re-read whenever it changes. The newest key signs;
a key that a rotation replaced keeps verifying for JWT_TTL_SECONDS after it stopped
signing, so no token is cut short, and its public half stays in /.well-known/jwks.json
for as long. Where replicas read the file at different times (a Kubernetes Secret
reaches each pod within about a minute), `rotate --after SECONDS` publishes the new key
at once and lets it sign only later, so that no replica meets a token of a key it has
not read yet. ES256 (ECDSA P-256): every JOSE library and OpenID relying party verifies
it (EdDSA is still missing from several), and its keys are small.
"""

import base64
import dataclasses
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ALGORITHM = "ES256"


class KeyFileError(ValueError):
    """A key operation the file refuses."""


def _b64(number: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(32, "big")).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class SigningKey:
    kid: str
    created: float  # epoch seconds
    private_pem: str
    signs_from: float  # published and verifying before it signs: replicas learn it first
    signed_until: float | None = None  # when a newer key took over; None: not yet

    def verifies_until(self, ttl_seconds: int) -> float:
        return float("inf") if self.signed_until is None else self.signed_until + ttl_seconds

    def private_key(self) -> ec.EllipticCurvePrivateKey:
        return serialization.load_pem_private_key(self.private_pem.encode("ascii"), None)


def new_key(now: float, signs_from: float) -> SigningKey:
    pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()).decode("ascii")
    return SigningKey(secrets.token_urlsafe(12), now, pem, signs_from)


@dataclass(frozen=True)
class KeySet:
    """One reading of the keys file: cryptography's key objects made once per reading."""
    keys: tuple[SigningKey, ...]
    ttl_seconds: int
    private: dict  # kid -> cryptography's private key

    @classmethod
    def of(cls, keys, ttl_seconds: int) -> "KeySet":
        keys = tuple(keys)
        return cls(keys, ttl_seconds, {k.kid: k.private_key() for k in keys})

    def signer(self, now: float) -> SigningKey | None:
        """The key that signs at `now`: the newest whose turn has come."""
        due = [k for k in self.keys if k.signs_from <= now
               and (k.signed_until is None or now < k.signed_until)]
        return max(due, key=lambda k: k.signs_from) if due else None

    def verifier(self, kid: str, now: float):
        """The public key that verifies tokens with this `kid` and the time it stops,
        or None (unknown or expired)."""
        key = next((k for k in self.keys if k.kid == kid), None)
        if key is None:
            return None
        until = key.verifies_until(self.ttl_seconds)
        return (self.private[kid].public_key(), until) if now < until else None

    def jwks(self, now: float) -> dict:
        """The public halves of the keys that verify at `now`, as JWKs (RFC 7517/7518)."""
        return {"keys": [self._jwk(k.kid) for k in self.keys
                         if now < k.verifies_until(self.ttl_seconds)]}

    def _jwk(self, kid: str) -> dict:
        numbers = self.private[kid].public_key().public_numbers()
        return {"kty": "EC", "crv": "P-256", "x": _b64(numbers.x), "y": _b64(numbers.y),
                "kid": kid, "alg": ALGORITHM, "use": "sig"}


class KeyRing:
    """The keys file, re-read whenever it changes on disk (CLI edits apply live)."""

    def __init__(self, path, ttl_seconds: int):
        self.path, self.ttl = Path(path), ttl_seconds
        self._lock = threading.Lock()
        self._stamp = None
        self._set = KeySet.of((), ttl_seconds)

    def current(self) -> KeySet:
        stat = self.path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp != self._stamp:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._set = KeySet.of((SigningKey(**k) for k in raw.get("keys", [])),
                                      self.ttl)
                self._stamp = stamp
            return self._set

    def _save(self, keys) -> None:
        payload = {"keys": [k.__dict__ for k in sorted(keys, key=lambda k: k.created)]}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".keys-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        # A new file is private; a rotated one keeps the mode its operator gave it (Compose
        # mounts it into a container whose user must read it).
        os.chmod(tmp, self.path.stat().st_mode & 0o777 if self.path.exists() else 0o600)
        os.replace(tmp, self.path)

    def _keys(self) -> list[SigningKey]:
        return list(self.current().keys) if self.path.exists() else []

    def rotate(self, now: float | None = None, after: float = 0.0) -> SigningKey:
        """A new key, published now and signing `after` seconds from now; the one it
        replaces signs until then and verifies until its last token expires."""
        now = time.time() if now is None else now
        key = new_key(now, now + after)
        self._save([k if k.signed_until is not None else
                    dataclasses.replace(k, signed_until=key.signs_from)
                    for k in self._keys()] + [key])
        return key

    def ensure(self) -> None:
        """A first key when the file has none (make run, make test)."""
        if not self._keys():
            self.rotate()

    def retire(self, kid: str | None = None, now: float | None = None) -> list[str]:
        """Drop `kid` now, or without it every key that verifies nothing any more."""
        now = time.time() if now is None else now
        keys = self._keys()
        if kid is not None:
            key = next((k for k in keys if k.kid == kid), None)
            if key is None:
                raise KeyFileError(f"no key {kid!r}")
            if key.signed_until is None:
                raise KeyFileError(f"{kid!r} signs tokens, or will: rotate first")
            gone = [key]
        else:
            gone = [k for k in keys if now >= k.verifies_until(self.ttl)]
        self._save([k for k in keys if k not in gone])
        return [k.kid for k in gone]
