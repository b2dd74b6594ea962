"""Tokens from the company's OpenID provider(s): the trusted issuers (TRUSTED_ISSUERS_FILE).

The file is a JSON list, one object per issuer:

    [{"issuer": "https://login.example.com/realms/ml",   # the tokens' `iss`, exactly
      "audience": "image-classifier",                    # their `aud` must hold it
      "roles_claim": "groups",          # where the roles or groups are (a.b for nested)
      "roles": {"ml-admins": "admin", "ml-users": "user"},  # theirs -> ours
      "default_role": "",               # a subject with none of them: "" = no scope
      "models_claim": "",               # where the models it may use are ("": every model)
      "algorithms": ["RS256", "ES256"], # asymmetric only: never none or HS* (RFC 8725)
      "jwks_uri": ""}]                  # "": from the issuer's discovery document

A token's scopes are its mapped roles' scopes and the known scopes of its `scope`
claim (what a provider grants a client by client credentials). Its subject is
`issuer#sub`. Each issuer's keys are fetched on first use and cached JWKS_LIFETIME_S;
a `kid` not in the cache refetches them, at most once per MIN_REFETCH_S, so a flood of
made-up key ids costs the provider nothing. A failed refetch keeps the keys it had.
"""

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import jwt
import requests

from gateway.identity.claims import IssuerUnavailable, TokenError, Verified, decode, token_id
from gateway.identity.principals import ROLE_SCOPES, SCOPES

JWKS_LIFETIME_S = 300.0
MIN_REFETCH_S = 10.0
FETCH_TIMEOUT_S = (2.0, 5.0)
ASYMMETRIC = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512",
                        "ES256", "ES384", "ES512", "EdDSA"})
REQUIRED_CLAIMS = ["exp", "iss", "aud", "sub"]


class IssuerConfigError(ValueError):
    """TRUSTED_ISSUERS_FILE describes an issuer the gateway may not trust."""


@dataclass(frozen=True)
class TrustedIssuer:
    issuer: str
    audience: str
    roles_claim: str = "roles"
    roles: dict = field(default_factory=dict)
    default_role: str = ""
    models_claim: str = ""  # where the models a subject may use are ("": every model)
    algorithms: tuple = ("RS256", "ES256", "PS256", "EdDSA")
    jwks_uri: str = ""
    min_refetch_seconds: float = MIN_REFETCH_S

    def __post_init__(self):
        if not self.issuer or not self.audience:
            raise IssuerConfigError("each trusted issuer needs 'issuer' and 'audience'")
        refused = set(self.algorithms) - ASYMMETRIC
        if refused or not self.algorithms:
            raise IssuerConfigError(f"{self.issuer}: algorithms must be asymmetric "
                                    f"({', '.join(sorted(ASYMMETRIC))}); refused: {sorted(refused)}")
        unknown = {r for r in [*self.roles.values(), self.default_role] if r} - set(ROLE_SCOPES)
        if unknown:
            raise IssuerConfigError(f"{self.issuer}: unknown roles {sorted(unknown)}")

    def models(self, claims: dict) -> tuple[str, ...] | None:
        """The models the token's models claim names; None (every model) when no claim
        is configured; () when it is but the token has none."""
        if not self.models_claim:
            return None
        named = _claim(claims, self.models_claim)
        named = named.split() if isinstance(named, str) else named
        return tuple(m for m in named if isinstance(m, str)) if isinstance(named, list) else ()

    def scopes(self, claims: dict) -> tuple[str, ...]:
        value = _claim(claims, self.roles_claim)
        theirs = value.split() if isinstance(value, str) else value or []
        ours = {self.roles[r] for r in theirs if isinstance(r, str) and r in self.roles} \
            or ({self.default_role} if self.default_role else set())
        granted = {s for role in ours for s in ROLE_SCOPES[role]}
        scope_claim = claims.get("scope")
        if isinstance(scope_claim, str):
            granted |= set(scope_claim.split()) & set(SCOPES)
        return tuple(s for s in SCOPES if s in granted)


def _claim(claims: dict, path: str):
    """The claim at a dotted path (a.b for nested), or None."""
    value = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class IssuerKeys:
    """One issuer's JWKS: cached, refetched when stale or on an unknown `kid` (bounded)."""

    def __init__(self, issuer: TrustedIssuer, session: requests.Session):
        self.issuer, self.session = issuer, session
        self._lock = threading.Lock()
        self._keys: dict[str, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")

    def _jwks_uri(self) -> str:
        if self.issuer.jwks_uri:
            return self.issuer.jwks_uri
        discovery = self.session.get(self.issuer.issuer.rstrip("/")
                                     + "/.well-known/openid-configuration",
                                     timeout=FETCH_TIMEOUT_S)
        discovery.raise_for_status()
        document = discovery.json()
        if document.get("issuer") != self.issuer.issuer:
            raise ValueError(f"discovery names issuer {document.get('issuer')!r}")
        return document["jwks_uri"]

    def _fetch(self) -> None:
        self._fetched_at = time.monotonic()
        try:
            answer = self.session.get(self._jwks_uri(), timeout=FETCH_TIMEOUT_S)
            answer.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(answer.json()).keys
        except (requests.RequestException, ValueError, jwt.PyJWKSetError, KeyError):
            return  # keep what we had; no keys at all is IssuerUnavailable below
        self._keys = {k.key_id: k for k in keys if k.key_id}

    def key(self, kid: str) -> jwt.PyJWK:
        with self._lock:
            age = time.monotonic() - self._fetched_at
            if age >= JWKS_LIFETIME_S or (kid not in self._keys
                                          and age >= self.issuer.min_refetch_seconds):
                self._fetch()
            if not self._keys:
                raise IssuerUnavailable(f"the keys of {self.issuer.issuer} cannot be fetched")
            if kid not in self._keys:
                raise TokenError("token's signing key is not among its issuer's keys")
            return self._keys[kid]


class TrustedIssuers:
    def __init__(self, issuers: list[TrustedIssuer]):
        self._by_issuer = {i.issuer: (i, IssuerKeys(i, requests.Session())) for i in issuers}

    @classmethod
    def from_file(cls, path: str) -> "TrustedIssuers | None":
        if not path:
            return None
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        try:
            return cls([TrustedIssuer(**{**entry, "algorithms": tuple(
                entry.get("algorithms", TrustedIssuer.algorithms))}) for entry in raw])
        except TypeError as exc:
            raise IssuerConfigError(f"{path}: {exc}") from None

    def trusts(self, issuer) -> bool:
        return isinstance(issuer, str) and issuer in self._by_issuer

    def verify(self, token: str, header: dict, claims: dict) -> Verified:
        issuer, keys = self._by_issuer[claims["iss"]]
        if header.get("alg") not in issuer.algorithms:
            raise TokenError(f"token algorithm is not allowed (only "
                             f"{', '.join(issuer.algorithms)})")
        key = keys.key(str(header.get("kid")))
        checked = decode(token, key.key, [header["alg"]], issuer.audience, issuer.issuer,
                         REQUIRED_CLAIMS)
        return Verified(f"{issuer.issuer}#{checked['sub']}", issuer.scopes(checked),
                        float(checked.get("iat") or checked.get("nbf") or 0),
                        float(checked["exp"]), token_id(checked, token), federated=True,
                        models=issuer.models(checked))
