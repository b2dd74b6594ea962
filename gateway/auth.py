"""POST /token (OAuth2 password grant), POST /logout, and the bearer-token check."""

import time

from flask import Blueprint, g, request

from gateway import metrics, ratelimits, tokens, tracing
from gateway.errors import ApiError, invalid_token, unauthorized
from gateway.ratelimits import limiter
from gateway.services import services
from gateway.users import User

INVALID_CREDENTIALS = "Incorrect username or password"


def _claims() -> dict:
    """The verified, unrevoked claims of the request's bearer token, or ApiError 401."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        metrics.AUTH_FAILURES.labels("missing_token").inc()
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    try:
        claims = tokens.verify(services().settings, token)
    except tokens.TokenError as exc:
        metrics.AUTH_FAILURES.labels("invalid_token").inc()
        raise invalid_token(str(exc)) from None
    if ratelimits.denied(claims["jti"]):
        metrics.AUTH_FAILURES.labels("revoked_token").inc()
        raise invalid_token("token has been revoked (logged out)")
    return claims


def authenticate(required_role: str | None = None) -> User:
    """The user behind the request's bearer token, or ApiError 401/403."""
    with tracing.span("auth"):
        return _authenticate(required_role)


def _authenticate(required_role: str | None) -> User:
    claims = _claims()
    user = services().users.get(claims["sub"])
    if user is None:
        metrics.AUTH_FAILURES.labels("deleted_user").inc()
        raise invalid_token("user no longer exists")
    if claims["iat"] < max(user.tokens_valid_after,
                           services().erasures.tokens_valid_after(user.username)):
        metrics.AUTH_FAILURES.labels("revoked_user_tokens").inc()
        raise invalid_token("token was revoked: the user's password or role changed, "
                            "their tokens were revoked, or their data erased")
    if required_role and user.role != required_role:
        metrics.AUTH_FAILURES.labels("forbidden").inc()
        raise ApiError(403, f"this needs the {required_role} role", error="insufficient_scope")
    g.user = user.username
    return user


def _failed_login(response) -> bool:
    return response.status_code == 401


bp = Blueprint("auth", __name__)


@bp.after_request
def no_store(response):
    """Token answers, successes and errors alike, are never cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


@bp.post("/token")
@limiter.limit(lambda: services().settings.login_rate_limit,
               key_func=ratelimits.login_user_key, deduct_when=_failed_login,
               error_message="too many failed logins for this user and client, try again later")
@limiter.limit(lambda: services().settings.login_address_rate_limit,
               key_func=ratelimits.login_address_key, deduct_when=_failed_login,
               error_message="too many failed logins from this client, try again later")
def issue_token():
    form = request.form
    username, password = form.get("username"), form.get("password")
    if not username or password is None:
        raise ApiError(422, "form fields 'username' and 'password' are required",
                       error="invalid_request")
    if form.get("grant_type") not in (None, "", "password"):
        raise ApiError(422, "grant_type must be 'password'", error="unsupported_grant_type")
    user = services().users.authenticate(username, password)
    if user is None:
        metrics.AUTH_FAILURES.labels("bad_credentials").inc()
        raise ApiError(401, INVALID_CREDENTIALS, {"WWW-Authenticate": "Bearer"},
                       error="invalid_grant")
    g.user = user.username
    return {
        "access_token": tokens.issue(services().settings, user.username, user.role),
        "token_type": "bearer",
        "expires_in": services().settings.jwt_ttl_seconds,
    }


@bp.post("/logout")
def logout():
    """Revoke the presented token at once, in every process sharing the limits storage."""
    claims = _claims()
    g.user = claims["sub"]
    ratelimits.deny(claims["jti"], claims["exp"] - time.time())
    metrics.TOKEN_REVOCATIONS.labels("logout").inc()
    return {"revoked": True}
