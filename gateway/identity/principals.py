"""Who a request acts for (`Principal`) and what it may do (scopes).

Scopes, one per kind of route; each route asks for the one it needs and a token
without it gets 403 `insufficient_scope` (RFC 6750 §3.1):
- `predict`: /predict and the Open Inference Protocol (/v2);
- `predictions:read`: the caller's own prediction-log rows and usage;
- `predictions:admin`: everybody's rows and usage, the export, erasure;
- `models:admin`: model versions and rollouts.
Users' roles map to scopes, so each keeps what the role gave; service accounts and
federated users get the scopes they are granted.

A principal may also be limited to some models (`models`: a user's or service
account's list in the users file, a federated token's models claim): its scopes then
hold for those models only, and lists show it only those.
"""

from dataclasses import dataclass

SCOPES = ("predict", "predictions:read", "predictions:admin", "models:admin")
ROLE_SCOPES = {
    "user": ("predict", "predictions:read"),
    "admin": SCOPES,
}


class ScopeError(ValueError):
    """A scope this gateway does not know."""


def parse_scopes(text: str | None) -> tuple[str, ...]:
    """A space- or comma-separated list, each one known; in SCOPES' order."""
    asked = {s for s in (text or "").replace(",", " ").split() if s}
    unknown = asked.difference(SCOPES)
    if unknown:
        raise ScopeError(f"unknown scope {sorted(unknown)[0]!r}: known are {' '.join(SCOPES)}")
    return tuple(s for s in SCOPES if s in asked)


@dataclass(frozen=True)
class Principal:
    """A user of the users file, a service account, or a federated user, whose name is
    `issuer#sub` (unique across issuers; it keys quotas, revocations and log rows)."""
    username: str
    scopes: frozenset
    predict_rate_limit: str | None = None  # None: PREDICT_RATE_LIMIT
    models: frozenset | None = None  # None: every model

    def may(self, scope: str, model: str | None = None) -> bool:
        """Whether it holds `scope` (for `model`, when one is named)."""
        return scope in self.scopes and (model is None or self.uses(model))

    def uses(self, model: str) -> bool:
        return self.models is None or model in self.models
