"""A signing key for the processes the tests and the bench start: archives they build are
signed with it (MODEL_SIGNING_KEY) and every gateway and agent trusts it
(MODEL_TRUSTED_KEYS_FILE), as `make run` does with its own key."""

import base64
import os
from pathlib import Path

from modelbuild import signing


def use_signing_key(directory: Path) -> Path:
    """Make a key in `directory` and name it in this process's environment, which the
    processes it starts inherit; the trusted keys file's path."""
    os.environ["MODEL_SIGNING_KEY"] = str(signing.new_key(directory))
    trusted = directory / signing.TRUSTED_KEYS
    os.environ["MODEL_TRUSTED_KEYS_FILE"] = str(trusted)
    return trusted


def signature_header(archive: Path) -> dict:
    """A push's Model-Signature header for an archive signed beside it."""
    return {"Model-Signature": base64.b64encode(
        archive.with_name(archive.name + ".sig").read_bytes()).decode()}
