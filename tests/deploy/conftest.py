"""Deploy tests: the real images, Compose file and Kubernetes manifests under a real engine.

`make test-deploy` runs them (not `make test`). Under CI=true a missing engine fails;
elsewhere it skips with the reason.
"""

import os
import secrets
import subprocess
from pathlib import Path

import pytest

from devstack.backends import required_or_skip
from devstack.servers import ROOT
from tests.support.containers import Engine, compose_service


def pytest_collection_modifyitems(items):
    """Building the serve image takes minutes the first time; any test here may wait on it."""
    for item in items:
        if Path(__file__).parent in item.path.parents:
            item.add_marker(pytest.mark.timeout(2400))


@pytest.fixture(scope="session")
def engine() -> Engine:
    found = Engine.find()
    required_or_skip(found is not None, "a container engine (docker or podman)")
    return found


@pytest.fixture(scope="session")
def images(engine) -> str:
    """Both images built by `make images`' script, with seeded random weights (offline)."""
    env = dict(os.environ, IMAGE_WEIGHTS="random", CONTAINER_ENGINE=engine.name)
    built = subprocess.run([str(ROOT / "scripts/build-images.sh")], env=env, capture_output=True,
                           text=True, timeout=2400)
    assert built.returncode == 0, built.stderr[-6000:]
    print(built.stdout)  # build times and sizes, shown with -s or on failure
    return built.stdout


@pytest.fixture(scope="session")
def prometheus_image(engine) -> str:
    """The Compose profile `monitoring`'s Prometheus image: pulled, or where no registry
    answers, a stand-in built from Debian's package under the same name."""
    name = compose_service("prometheus")["image"]
    if engine("image", "inspect", name, check=False).returncode == 0:
        return name
    if engine("pull", name, check=False, timeout=300).returncode == 0:
        return name
    engine("build", "-t", name, "-f", ROOT / "tests/support/prometheus-stand-in.Containerfile",
           ROOT / "tests/support", timeout=1200)
    return name


@pytest.fixture
def name_prefix() -> str:
    """A unique prefix, so runs never meet each other's containers."""
    return f"ictest-{secrets.token_hex(3)}"
