"""What the prediction log keeps of who asked and what they sent (its keys' command line:
gateway.cli.log_keys).

PREDICTION_LOG_USERNAMES=plain keeps the name; `keyed-hash` keeps
`hmac:<key id>:<HMAC-SHA256 of the name, base64url>` instead, under the keys file's
current key (PREDICTION_LOG_KEYS_FILE, a secret). A user's rows are found, listed and
erased under the plain name and under every key in the file, so rows written before a
switch or a key rotation still belong to their user; a key dropped from the file leaves
its rows with nobody's name.

PREDICTION_LOG_FILENAMES=full keeps the uploaded file's name, `extension-only` only its
extension, `off` neither.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

from core.settings import Settings, SettingsError

USERNAME_MODES = ("plain", "keyed-hash")
FILENAME_MODES = ("full", "extension-only", "off")
KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,15}")  # "hmac:" + id + ":" + 43 characters <= 64
MIN_KEY_BYTES = 32


class PrivacyError(SettingsError):
    """A mode or keys file the log cannot work with."""


def read_keys(path: str | Path) -> tuple[str, dict[str, bytes]]:
    """(current key id, every key id -> secret) from a keys file:
    {"current": "k2", "keys": {"k1": "<secret>", "k2": "<secret>"}}."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
        keys = {kid: secret.encode() for kid, secret in raw["keys"].items()}
        current = raw["current"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PrivacyError(f"PREDICTION_LOG_KEYS_FILE {path}: {exc}") from None
    if current not in keys:
        raise PrivacyError(f"PREDICTION_LOG_KEYS_FILE {path}: current key {current!r} is missing")
    for kid, secret in keys.items():
        if not KEY_ID.fullmatch(kid) or len(secret) < MIN_KEY_BYTES:
            raise PrivacyError(f"PREDICTION_LOG_KEYS_FILE {path}: key ids are 1-15 letters, "
                               f"digits, - or _, and secrets at least {MIN_KEY_BYTES} bytes")
    return current, keys


@dataclass(frozen=True)
class LogPrivacy:
    usernames: str = "plain"
    filenames: str = "full"
    current_key: str | None = None
    keys: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> "LogPrivacy":
        usernames, filenames = settings.prediction_log_usernames, settings.prediction_log_filenames
        keys_file = settings.prediction_log_keys_file
        if usernames not in USERNAME_MODES:
            raise PrivacyError(
                f"PREDICTION_LOG_USERNAMES must be one of {', '.join(USERNAME_MODES)}")
        if filenames not in FILENAME_MODES:
            raise PrivacyError(
                f"PREDICTION_LOG_FILENAMES must be one of {', '.join(FILENAME_MODES)}")
        if usernames == "plain" and not keys_file:
            return cls(usernames, filenames)
        if not keys_file:
            raise PrivacyError("PREDICTION_LOG_USERNAMES=keyed-hash needs PREDICTION_LOG_KEYS_FILE "
                               "(make one with: gateway-log-keys new-key FILE)")
        current, keys = read_keys(keys_file)
        return cls(usernames, filenames, current, tuple(sorted(keys.items())))

    @staticmethod
    def _hashed(kid: str, secret: bytes, username: str) -> str:
        digest = hmac.new(secret, username.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return f"hmac:{kid}:{base64.urlsafe_b64encode(digest.digest()).decode().rstrip('=')}"

    def stored_user(self, username: str) -> str:
        """What a new row keeps of its user."""
        if self.usernames == "plain":
            return username
        return self._hashed(self.current_key, dict(self.keys)[self.current_key], username)

    def names_of(self, username: str) -> tuple[str, ...]:
        """Every form the user's rows may have: the plain name and each key's hash."""
        return (username, *(self._hashed(kid, secret, username) for kid, secret in self.keys))

    def stored_file(self, filename: str, extension: str) -> tuple[str | None, str | None]:
        """(filename, extension) a new row keeps."""
        if self.filenames == "full":
            return filename, extension
        return None, extension if self.filenames == "extension-only" else None


def new_key(path: str | Path) -> str:
    """Add a generated key to the keys file (made if missing, mode 0600) and make it
    current; its id."""
    path = Path(path)
    if path.exists():
        _, keys = read_keys(path)
        secrets_by_id = {kid: secret.decode() for kid, secret in keys.items()}
    else:
        secrets_by_id = {}
    kid = f"k{len(secrets_by_id) + 1}"
    while kid in secrets_by_id:
        kid = f"k{int(kid[1:]) + 1}"
    secrets_by_id[kid] = secrets.token_urlsafe(48)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".log-keys-")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump({"current": kid, "keys": secrets_by_id}, f, indent=2)
        f.write("\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return kid
