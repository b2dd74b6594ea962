"""POST /token (OAuth2 password and client-credentials grants), POST /logout, the
bearer-token check with scopes, and what lets others verify our tokens: the JWKS and
the issuer's OpenID metadata under /.well-known."""

import time
from urllib.parse import unquote

from flask import Blueprint, g, request, url_for

from core import tracing
from core.errors import ApiError, invalid_token, unauthorized, unavailable
from core.model_history import Actor
from gateway import metrics
from gateway.identity.claims import IssuerUnavailable, TokenError, Verified
from gateway.identity.principals import SCOPES, Principal, ScopeError, parse_scopes
from gateway.web import ratelimits
from gateway.web.extension import services
from gateway.web.ratelimits import limiter

INVALID_CREDENTIALS = "Incorrect username or password"
INVALID_CLIENT = "Incorrect client id or secret"
GRANTS = ("password", "client_credentials")


def _verified() -> Verified:
    """The verified, unrevoked bearer token, or ApiError 401 (503 when its issuer's
    keys cannot be fetched)."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        metrics.AUTH_FAILURES.labels("missing_token").inc()
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    try:
        verified = services().tokens.verify(token)
    except TokenError as exc:
        metrics.AUTH_FAILURES.labels("invalid_token").inc()
        raise invalid_token(str(exc)) from None
    except IssuerUnavailable as exc:
        raise unavailable(str(exc)) from None
    if ratelimits.denied(verified.token_id):
        metrics.AUTH_FAILURES.labels("revoked_token").inc()
        raise invalid_token("token has been revoked (logged out)")
    return verified


def authenticate(scope: str, model: str | None = None, basic: bool = False) -> Principal:
    """Who the request's bearer token acts for, if it holds `scope` (for `model`, when
    one is named); else ApiError 401 (no valid token) or 403 insufficient_scope. With
    `basic`, a service account's client id and secret by HTTP Basic count as a token
    (for TorchServe's clients, which send no bearer header)."""
    with tracing.span("auth"):
        principal = _basic_principal() if basic and _is_basic() else _principal(_verified())
    if not principal.may(scope, model):
        metrics.AUTH_FAILURES.labels("forbidden").inc()
        what = f"the '{scope}' scope" + (f" for model {model}" if model else "")
        raise ApiError(403, f"this needs {what}", {"WWW-Authenticate": (
            f'Bearer error="insufficient_scope", scope="{scope}"')}, error="insufficient_scope")
    g.user = principal.username
    return principal


def actor(principal: Principal) -> Actor:
    """Who makes a model change, for its history: the caller, in this request."""
    return Actor(principal.username, g.get("request_id"))


def _is_basic() -> bool:
    return request.authorization is not None and request.authorization.type == "basic"


def _basic_principal() -> Principal:
    """A service account by its client credentials (HTTP Basic, as at /token), with the
    login limits' bound on failures."""
    name, secret = _client_credentials()
    limit = services().settings.login_rate_limit
    if not ratelimits.basic_login_allowed(name, limit):
        raise ApiError(429, "too many failed logins for this client, try again later")
    user = services().users.check_client(name or "", secret or "")
    if user is None:
        metrics.AUTH_FAILURES.labels("bad_credentials").inc()
        ratelimits.basic_login_failed(name, limit)
        raise ApiError(401, INVALID_CLIENT, {"WWW-Authenticate": 'Basic realm="torchserve"'},
                       error="invalid_client")
    return user.principal()


def _principal(verified: Verified) -> Principal:
    cutoff = services().snapshot.current().tokens_valid_after(verified.subject)
    if verified.federated:
        principal = Principal(verified.subject, frozenset(verified.scopes),
                              models=None if verified.models is None
                              else frozenset(verified.models))
    else:
        user = services().users.get(verified.subject)
        if user is None:
            metrics.AUTH_FAILURES.labels("deleted_user").inc()
            raise invalid_token("user no longer exists")
        cutoff = max(cutoff, user.tokens_valid_after)
        principal = user.principal(verified.scopes)
    if verified.issued_at < cutoff:
        metrics.AUTH_FAILURES.labels("revoked_user_tokens").inc()
        raise invalid_token("token was revoked: the user's password or role changed, "
                            "their tokens were revoked, or their data erased")
    return principal


def _failed_login(response) -> bool:
    return response.status_code == 401


bp = Blueprint("auth", __name__)


@bp.after_request
def no_store(response):
    """Token answers, successes and errors alike, are never cached (RFC 6749 §5.1)."""
    response.headers["Cache-Control"] = "no-store"
    response.headers["Pragma"] = "no-cache"
    return response


def _client_credentials() -> tuple[str | None, str | None]:
    """The client's id and secret: HTTP Basic (RFC 6749 §2.3.1, each form-encoded) or
    the form's client_id and client_secret."""
    basic = request.authorization
    if basic is not None and basic.type == "basic":
        return unquote(basic.username or ""), unquote(basic.password or "")
    return request.form.get("client_id"), request.form.get("client_secret")


@bp.post("/token")
@limiter.limit(lambda: services().settings.login_rate_limit,
               key_func=ratelimits.login_user_key, deduct_when=_failed_login,
               error_message="too many failed logins for this user and client, try again later")
@limiter.limit(lambda: services().settings.login_address_rate_limit,
               key_func=ratelimits.login_address_key, deduct_when=_failed_login,
               error_message="too many failed logins from this client, try again later")
def issue_token():
    form = request.form
    grant = form.get("grant_type") or "password"
    if grant not in GRANTS:
        raise ApiError(422, f"grant_type must be one of {', '.join(GRANTS)}",
                       error="unsupported_grant_type")
    try:
        asked = parse_scopes(form["scope"]) if form.get("scope") else None
    except ScopeError as exc:
        raise ApiError(400, str(exc), error="invalid_scope") from None
    if grant == "password":
        name, secret = form.get("username"), form.get("password")
        if not name or secret is None:
            raise ApiError(422, "form fields 'username' and 'password' are required",
                           error="invalid_request")
    else:
        name, secret = _client_credentials()
        if not name or secret is None:
            raise ApiError(422, "client credentials are required: HTTP Basic, or the form "
                           "fields 'client_id' and 'client_secret'", error="invalid_request")
    user = services().users.authenticate(name, secret)
    # A service account never logs in by password, nor a person by client credentials.
    if user is None or user.is_service != (grant == "client_credentials"):
        metrics.AUTH_FAILURES.labels("bad_credentials").inc()
        if grant == "password":
            raise ApiError(401, INVALID_CREDENTIALS, {"WWW-Authenticate": "Bearer"},
                           error="invalid_grant")
        raise ApiError(401, INVALID_CLIENT, {"WWW-Authenticate": 'Basic realm="token"'},
                       error="invalid_client")
    principal = user.principal(asked)
    g.user = user.username
    scopes = tuple(s for s in SCOPES if principal.may(s))
    try:
        token = services().tokens.issue(user.username, scopes)
    except TokenError as exc:  # the keys file has no signer: the operator's to fix
        raise unavailable(str(exc), 30) from None
    return {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": services().settings.jwt_ttl_seconds,
        "scope": " ".join(scopes),
    }


@bp.post("/logout")
def logout():
    """Revoke the presented token at once, in every process sharing the limits storage."""
    verified = _verified()
    g.user = verified.subject
    ratelimits.deny(verified.token_id, verified.expires_at - time.time())
    metrics.TOKEN_REVOCATIONS.labels("logout").inc()
    return {"revoked": True}


@bp.get("/.well-known/jwks.json")
def jwks():
    """The public keys that verify our tokens: the signer's and those still verifying."""
    ring = services().tokens.ring
    return ring.current().jwks(time.time()) if ring is not None else {"keys": []}


@bp.get("/.well-known/openid-configuration")
def openid_configuration():
    """The issuer's metadata (RFC 8414 fields), so clients and verifiers need no set-up."""
    settings = services().settings
    return {
        "issuer": settings.jwt_issuer,
        "token_endpoint": url_for("auth.issue_token", _external=True),
        "jwks_uri": url_for("auth.jwks", _external=True),
        "grant_types_supported": list(GRANTS),
        "scopes_supported": list(SCOPES),
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }
