"""What checking a token means for ours (gateway.identity.tokens) and a trusted
issuer's (gateway.identity.federation) alike: PyJWT's checks, their errors, the result."""

import hashlib
from dataclasses import dataclass

import jwt


class TokenError(ValueError):
    """The token is missing, malformed, forged or expired."""


class IssuerUnavailable(RuntimeError):
    """A trusted issuer's keys cannot be fetched now: try again later (not the caller's fault)."""


@dataclass(frozen=True)
class Verified:
    subject: str  # our username or client id, or `issuer#sub` for a federated user
    scopes: tuple[str, ...] | None  # None: the user's role decides (our own tokens)
    issued_at: float  # revocations and erasures cut tokens issued before them
    expires_at: float
    token_id: str  # what /logout denies
    federated: bool = False
    models: tuple[str, ...] | None = None  # a federated token's models claim; None: every one


def decode(token: str, key, algorithms: list[str], audience: str, issuer: str,
           required: list[str]) -> dict:
    """PyJWT's checks, each failure a TokenError saying which."""
    try:
        return jwt.decode(token, key, algorithms=algorithms, audience=audience, issuer=issuer,
                          options={"require": required})
    except jwt.ExpiredSignatureError as exc:
        raise TokenError("token has expired") from exc
    except jwt.ImmatureSignatureError as exc:
        raise TokenError("token is not valid yet") from exc
    except jwt.InvalidAudienceError as exc:
        raise TokenError("token has the wrong audience") from exc
    except jwt.InvalidIssuerError as exc:
        raise TokenError("token has the wrong issuer") from exc
    except jwt.InvalidSignatureError as exc:
        raise TokenError("token signature is invalid") from exc
    except jwt.InvalidAlgorithmError as exc:
        raise TokenError(f"token algorithm is not allowed (only {', '.join(algorithms)})") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the '{exc.claim}' claim") from exc
    except jwt.DecodeError as exc:
        raise TokenError("token is malformed") from exc
    except jwt.PyJWTError as exc:  # e.g. a key of another type than the algorithm's
        raise TokenError(f"invalid token: {exc}") from exc


def unverified(token: str) -> tuple[dict, dict]:
    """Header and claims, unchecked: only to choose how to check them."""
    try:
        parts = jwt.decode_complete(token, options={"verify_signature": False})
    except jwt.InvalidTokenError as exc:
        raise TokenError("token is malformed") from exc
    return parts["header"], parts["payload"]


def token_id(claims: dict, token: str) -> str:
    return str(claims.get("jti") or hashlib.sha256(token.encode()).hexdigest())
