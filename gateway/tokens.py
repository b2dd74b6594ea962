"""JWT access tokens: HS256, short-lived, nothing about the password inside."""

import time
import uuid

import jwt

from gateway.settings import Settings

ALGORITHM = "HS256"
REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "aud", "sub", "jti"]


class TokenError(ValueError):
    """The token is missing, malformed, forged or expired."""


def issue(settings: Settings, username: str, role: str, now: float | None = None) -> str:
    now = time.time() if now is None else now
    claims = {
        "sub": username,
        "role": role,
        # Milliseconds (NumericDate may be fractional): a token issued just after a
        # revocation in the same second must still be newer than it.
        "iat": round(now, 3),
        "nbf": int(now),
        "exp": int(now) + settings.jwt_ttl_seconds,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "jti": uuid.uuid4().hex,
    }
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


def verify(settings: Settings, token: str) -> dict:
    """Return the claims of a valid token or raise TokenError with a reason."""
    try:
        return jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": REQUIRED_CLAIMS},
        )
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
        raise TokenError(f"token algorithm is not allowed (only {ALGORITHM})") from exc
    except jwt.MissingRequiredClaimError as exc:
        raise TokenError(f"token lacks the '{exc.claim}' claim") from exc
    except jwt.DecodeError as exc:
        raise TokenError("token is malformed") from exc
    except jwt.InvalidTokenError as exc:
        raise TokenError(f"invalid token: {exc}") from exc
