"""Access tokens (JWT): issued by us, or by a trusted OpenID provider.

Ours are signed ES256 with the key ring's newest key, `kid` in the header
(gateway.identity.keys). HS256 with JWT_SECRET is the fallback of one release: it signs when no
keys file is set and verifies while JWT_SECRET is set, so an upgrade logs nobody out.
Tokens of a trusted issuer are checked by gateway.identity.federation. Which path a token takes
is read from its `iss`; each path has its own algorithm allow-list (RFC 8725), so no
token picks its own way to be checked.

A client sends its token with every call: our tokens, once verified, are remembered by
their exact string (as Envoy's jwt_authn filter does with `jwt_cache_config`) until they
expire, their key stops verifying or the keys file changes, so a repeat call skips the
signature check. Revocations, erasures and user changes are checked on every call
(gateway.web.auth).
"""

import threading
import time
import uuid
from dataclasses import dataclass

import jwt
from cachetools import TLRUCache

from core.settings import Settings, SettingsError
from gateway.identity.claims import TokenError, Verified, decode, token_id, unverified
from gateway.identity.federation import TrustedIssuers
from gateway.identity.keys import ALGORITHM, KeyRing

FALLBACK_ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]
VERIFIED_CACHE_SIZE = 10_000  # tokens remembered per process, least recently used out first


@dataclass(frozen=True)
class _Remembered:
    verified: Verified
    keys: object  # the KeySet that verified it (None: JWT_SECRET): another one, check again
    until: float  # the token's expiry, or its key's last moment if sooner


class Tokens:
    def __init__(self, settings: Settings, ring: KeyRing | None, issuers=None):
        self.settings, self.ring, self.issuers = settings, ring, issuers
        self._remembered = TLRUCache(VERIFIED_CACHE_SIZE, lambda _, entry, __: entry.until,
                                     timer=time.time)
        self._lock = threading.Lock()  # cachetools' caches are not thread-safe

    @classmethod
    def from_settings(cls, settings: Settings) -> "Tokens":
        """Our keys file and the trusted issuers, each read once now: a missing or
        malformed file stops the start with SettingsError, not a login."""
        ring = None
        if settings.jwt_keys_file:
            ring = KeyRing(settings.jwt_keys_file, settings.jwt_ttl_seconds)
            try:
                ring.current()
            except (OSError, ValueError, TypeError) as exc:
                raise SettingsError(f"JWT_KEYS_FILE: {exc}") from None
        try:
            issuers = TrustedIssuers.from_file(settings.trusted_issuers_file)
        except (OSError, ValueError, TypeError) as exc:
            raise SettingsError(f"TRUSTED_ISSUERS_FILE: {exc}") from None
        return cls(settings, ring, issuers)

    def issue(self, subject: str, scopes: tuple[str, ...], now: float | None = None) -> str:
        now = time.time() if now is None else now
        claims = {
            "sub": subject,
            "scope": " ".join(scopes),
            # Milliseconds (NumericDate may be fractional): a token issued just after a
            # revocation in the same second must still be newer than it.
            "iat": round(now, 3),
            "nbf": int(now),
            "exp": int(now) + self.settings.jwt_ttl_seconds,
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "jti": uuid.uuid4().hex,
        }
        if self.ring is None:
            return jwt.encode(claims, self.settings.jwt_secret, algorithm=FALLBACK_ALGORITHM)
        keys = self.ring.current()
        signer = keys.signer(time.time())  # `now` dates the claims (tests); keys go by the clock
        if signer is None:
            raise TokenError("the keys file has no signing key: gateway-keys rotate")
        return jwt.encode(claims, keys.private[signer.kid], algorithm=ALGORITHM,
                          headers={"kid": signer.kid})

    def verify(self, token: str) -> Verified:
        """The checked token, or TokenError with a reason (IssuerUnavailable when a
        trusted issuer's keys cannot be fetched)."""
        with self._lock:
            remembered = self._remembered.get(token)
        if remembered is not None and remembered.keys is self._keys():
            return remembered.verified
        header, claims = unverified(token)
        issuer = claims.get("iss")
        if issuer != self.settings.jwt_issuer:
            if self.issuers is None or not self.issuers.trusts(issuer):
                raise TokenError("token has the wrong issuer")
            return self.issuers.verify(token, header, claims)
        keys = self._keys()
        key, algorithms, key_until = self._key(header, keys, time.time())
        checked = decode(token, key, algorithms, self.settings.jwt_audience,
                         self.settings.jwt_issuer, REQUIRED_CLAIMS)
        # Tokens of the HS256 release carry a role, not scopes: the role decides.
        scopes = tuple(checked["scope"].split()) if "scope" in checked else None
        verified = Verified(checked["sub"], scopes, checked["iat"], checked["exp"],
                            token_id(checked, token))
        with self._lock:
            self._remembered[token] = _Remembered(verified, keys,
                                                  min(verified.expires_at, key_until))
        return verified

    def _keys(self):
        """The keys file's current reading (None without one): only our own tokens need it."""
        return self.ring.current() if self.ring is not None else None

    def _key(self, header: dict, keys, now: float):
        """The key and the one algorithm that may check this token of ours, and until
        when that key verifies."""
        alg = header.get("alg")
        if alg == ALGORITHM and keys is not None:
            verifier = keys.verifier(str(header.get("kid")), now)
            if verifier is None:
                raise TokenError("token's signing key is unknown or retired")
            key, until = verifier
            return key, [ALGORITHM], until
        if alg == FALLBACK_ALGORITHM and self.settings.jwt_secret:
            return self.settings.jwt_secret, [FALLBACK_ALGORITHM], float("inf")
        allowed = [a for a, on in ((ALGORITHM, self.ring), (FALLBACK_ALGORITHM,
                                                             self.settings.jwt_secret)) if on]
        raise TokenError(f"token algorithm is not allowed (only {', '.join(allowed)})")
