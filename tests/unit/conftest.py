"""Unit tests: plain Python and Flask's test client, no server, no torch (`make unit`)."""

import sys
from pathlib import Path

import pytest

from gateway.identity import users

HERE = Path(__file__).parent


@pytest.fixture(autouse=True)
def cheap_bcrypt(request, monkeypatch):
    """bcrypt at its lowest cost: hashes are made and checked as in production, in a
    hundredth of the time. The cost itself is tested where it is marked `real_bcrypt`."""
    if "real_bcrypt" not in request.keywords:
        monkeypatch.setattr(users, "BCRYPT_ROUNDS", 4)


@pytest.fixture(scope="session", autouse=True)
def no_torch(request):
    """A run of the unit tests alone never loads torch or the model code: they stay fast."""
    yield
    if all(HERE in Path(item.path).parents for item in request.session.items):
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("torch", "torchvision", "handler", "modelbuild"))
        assert loaded == [], f"unit tests loaded {loaded[:5]}"
