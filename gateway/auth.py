"""POST /token (OAuth2 password grant) and the bearer-token check every route uses."""

from flask import Blueprint, current_app, g, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from gateway import metrics, tokens
from gateway.errors import ApiError, unauthorized
from gateway.users import User

INVALID_CREDENTIALS = "Incorrect username or password"


def _login_key() -> str:
    return f"login:{request.form.get('username', '')}|{get_remote_address()}"


def authenticate(required_role: str | None = None) -> User:
    """The user behind the request's bearer token, or ApiError 401/403."""
    services = current_app.extensions["gateway"]
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        metrics.AUTH_FAILURES.labels("missing_token").inc()
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    try:
        claims = tokens.verify(services.settings, token)
    except tokens.TokenError as exc:
        metrics.AUTH_FAILURES.labels("invalid_token").inc()
        raise unauthorized(str(exc)) from None
    user = services.users.get(claims["sub"])
    if user is None:
        metrics.AUTH_FAILURES.labels("deleted_user").inc()
        raise unauthorized("user no longer exists")
    if required_role and user.role != required_role:
        metrics.AUTH_FAILURES.labels("forbidden").inc()
        raise ApiError(403, f"this needs the {required_role} role")
    g.user = user.username
    return user


def create_blueprint(limiter: Limiter) -> Blueprint:
    bp = Blueprint("auth", __name__)

    @bp.post("/token")
    @limiter.limit(
        lambda: current_app.extensions["gateway"].settings.login_rate_limit,
        key_func=_login_key,
        deduct_when=lambda response: response.status_code == 401,
        error_message="too many failed logins for this user and client, try again later",
    )
    def issue_token():
        services = current_app.extensions["gateway"]
        form = request.form
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            raise ApiError(422, "form fields 'username' and 'password' are required")
        if form.get("grant_type") not in (None, "", "password"):
            raise ApiError(422, "grant_type must be 'password'")
        user = services.users.authenticate(username, password)
        if user is None:
            metrics.AUTH_FAILURES.labels("bad_credentials").inc()
            raise unauthorized(INVALID_CREDENTIALS)
        g.user = user.username
        return {
            "access_token": tokens.issue(services.settings, user.username, user.role),
            "token_type": "bearer",
            "expires_in": services.settings.jwt_ttl_seconds,
        }

    return bp
