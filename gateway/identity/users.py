"""The users file (username -> bcrypt hash and role; service accounts with scopes); its
command line is gateway.cli.users.

Changing a password or role, or revoking, sets the user's `tokens_valid_after`:
tokens issued before it are refused by every gateway process that reads this file.

A service account (role `service`) gets tokens by OAuth2 client credentials with its
name as client id, and holds only the scopes it was given (gateway.identity.principals);
`revoke`, `quota`, `remove` and `erase` apply to it as to a user.

Passwords never travel in argv. bcrypt only reads the first 72 bytes of a
password, so we refuse longer ones when they are set instead of silently
ignoring the tail; at login a longer password simply cannot match.
"""

import dataclasses
import functools
import hashlib
import json
import os
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import bcrypt
from limits import parse_many

from core.catalog import MODEL_NAME_PATTERN
from gateway.identity.principals import ROLE_SCOPES, Principal

ROLES = tuple(ROLE_SCOPES)  # a person's roles
SERVICE = "service"  # a service account's role
BCRYPT_ROUNDS = 12
BCRYPT_MAX_BYTES = 72
MIN_PASSWORD_CHARS = 8


@functools.cache
def _dummy_hash() -> bytes:
    """What an unknown user's password is checked against, so the answer takes as long
    as for a known one; made on first use, not at import."""
    return bcrypt.hashpw(b"no such user", bcrypt.gensalt(BCRYPT_ROUNDS))


class UserError(ValueError):
    """A user or password that the store refuses."""


@dataclass(frozen=True)
class User:
    username: str
    role: str
    password_hash: str
    tokens_valid_after: float = 0.0  # epoch seconds: older tokens are revoked
    predict_rate_limit: str | None = None  # None: PREDICT_RATE_LIMIT
    scopes: tuple[str, ...] = ()  # a service account's; a person's come from the role
    models: tuple[str, ...] | None = None  # the models it may use; None: every one

    @property
    def is_service(self) -> bool:
        return self.role == SERVICE

    def principal(self, asked: tuple[str, ...] | None = None) -> Principal:
        """What a token of this user may do: what it asked for, within what the user holds."""
        held = self.scopes if self.is_service else ROLE_SCOPES[self.role]
        granted = held if asked is None else tuple(s for s in held if s in asked)
        return Principal(self.username, frozenset(granted), self.predict_rate_limit,
                         None if self.models is None else frozenset(self.models))


def hash_password(password: str) -> str:
    encoded = password.encode("utf-8")
    if len(password) < MIN_PASSWORD_CHARS:
        raise UserError(f"password must have at least {MIN_PASSWORD_CHARS} characters")
    if len(encoded) > BCRYPT_MAX_BYTES:
        raise UserError(f"password must be at most {BCRYPT_MAX_BYTES} bytes in UTF-8 (bcrypt's limit)")
    return bcrypt.hashpw(encoded, bcrypt.gensalt(BCRYPT_ROUNDS)).decode("ascii")


class UserStore:
    """A JSON users file, re-read whenever it changes on disk (CLI edits apply live)."""

    def __init__(self, path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp = None
        self._users: dict[str, User] = {}
        self._clients: dict[tuple[str, bytes], str] = {}  # checked secrets -> their hash

    def _load(self) -> dict[str, User]:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        with self._lock:
            if stamp != self._stamp:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._users = {name: User(name, **{
                    **entry, "scopes": tuple(entry.get("scopes", ())),
                    "models": tuple(entry["models"]) if "models" in entry else None})
                    for name, entry in raw.get("users", {}).items()}
                self._stamp = stamp
            return self._users

    def get(self, username: str) -> User | None:
        return self._load().get(username)

    def all(self) -> list[User]:
        return sorted(self._load().values(), key=lambda u: u.username)

    def authenticate(self, username: str, password: str) -> User | None:
        """The user if the password matches; constant work whether or not they exist."""
        user = self.get(username)
        candidate = password.encode("utf-8", "surrogateescape")
        stored = user.password_hash.encode("ascii") if user else _dummy_hash()
        if len(candidate) > BCRYPT_MAX_BYTES:
            bcrypt.checkpw(b"", stored)  # same cost, cannot match
            return None
        return user if bcrypt.checkpw(candidate, stored) and user else None

    def check_client(self, client_id: str, secret: str) -> User | None:
        """The service account if the secret matches (HTTP Basic on every call): a
        match is remembered by the secret's sha256 for as long as the account keeps
        that secret, so bcrypt runs once per client and process, not per call."""
        user = self.get(client_id)
        key = (client_id, hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest())
        if user is not None and user.is_service and self._clients.get(key) == user.password_hash:
            return user
        user = self.authenticate(client_id, secret)
        if user is None or not user.is_service:
            return None
        self._clients[key] = user.password_hash
        return user

    def save(self, users: dict[str, User]) -> None:
        payload = {"users": {u.username: _entry(u)
                             for u in sorted(users.values(), key=lambda u: u.username)}}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users-")
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2)
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def set_user(self, username: str, password: str, role: str,
                 scopes: tuple[str, ...] = ()) -> None:
        if role not in (*ROLES, SERVICE):
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        if not username or len(username) > 64 or not username.isprintable() or "#" in username:
            raise UserError("username must be 1-64 printable characters, without '#'")
        users = dict(self._load())
        old = users.get(username)
        users[username] = User(username, role, hash_password(password), time.time(),
                               old.predict_rate_limit if old else None, scopes,
                               old.models if old else None)
        self.save(users)

    def set_client(self, client_id: str, scopes: tuple[str, ...]) -> str:
        """A service account with a generated secret, returned once (only its hash is kept)."""
        if not scopes:
            raise UserError("a service account needs at least one scope")
        secret = secrets.token_urlsafe(32)
        self.set_user(client_id, secret, SERVICE, scopes)
        return secret

    def _replace(self, username: str, **changes) -> None:
        users = dict(self._load())
        if username not in users:
            raise UserError(f"no user {username!r}")
        users[username] = dataclasses.replace(users[username], **changes)
        self.save(users)

    def revoke(self, username: str) -> None:
        """Every token issued to the user until now stops working."""
        self._replace(username, tokens_valid_after=time.time())

    def set_quota(self, username: str, limit: str | None) -> None:
        if limit is not None:
            try:
                parse_many(limit)
            except ValueError as exc:
                raise UserError(str(exc)) from None
        self._replace(username, predict_rate_limit=limit)

    def set_models(self, username: str, models: tuple[str, ...] | None) -> None:
        """Limit the user to `models` (None: every model); their tokens follow at once."""
        bad = [m for m in models or () if not MODEL_NAME_PATTERN.match(m)]
        if bad:
            raise UserError(f"not a model name: {bad[0][:64]!r}")
        self._replace(username, models=models)

    def remove(self, username: str) -> None:
        users = dict(self._load())
        if users.pop(username, None) is None:
            raise UserError(f"no user {username!r}")
        self.save(users)


def _entry(user: User) -> dict:
    """The file's record of a user: optional fields only when set."""
    entry = {"role": user.role, "password_hash": user.password_hash}
    if user.scopes:
        entry["scopes"] = list(user.scopes)
    if user.models is not None:
        entry["models"] = list(user.models)
    if user.tokens_valid_after:
        entry["tokens_valid_after"] = user.tokens_valid_after
    if user.predict_rate_limit:
        entry["predict_rate_limit"] = user.predict_rate_limit
    return entry
