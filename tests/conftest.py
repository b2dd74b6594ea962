"""Shared fixtures: model archives, a real TorchServe, a real gunicorn gateway."""

import secrets
import shutil
from pathlib import Path

import pytest
import requests

from handler import archive, weights
from support.servers import ROOT, GatewayServer, TorchServeServer

DEMO_USER, DEMO_PASSWORD = "client_user", "tryClassifier"
ADMIN_USER, ADMIN_PASSWORD = "ops_admin", secrets.token_urlsafe(12)


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """resnet18-1.0.mar (seed 0) and resnet18-2.0.mar (seed 1): predictions differ."""
    store = tmp_path_factory.mktemp("model_store")
    archive.build("1.0", weights.random_weights(0), store)
    archive.build("2.0", weights.random_weights(1), store)
    return store


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    from gateway.users import UserStore

    path = tmp_path_factory.mktemp("users") / "users.json"
    shutil.copy(ROOT / "config" / "users.json", path)
    UserStore(path).set_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
    return path


@pytest.fixture(scope="session")
def jwt_secret() -> str:
    return secrets.token_urlsafe(48)


def start_stack(tmp: Path, model_store: Path, users_file: Path, jwt_secret: str, **settings):
    """A READY TorchServe and a gateway in front of it; nothing left running if either fails."""
    torchserve = TorchServeServer(model_store, tmp / "torchserve")
    # Every test logs in from 127.0.0.1 (the fuzz tests fail hundreds of logins) and
    # the load tests send thousands of predictions as one user: the per-address login
    # limit and the quota are tested on a stack of their own (test_auth_lifecycle.py).
    settings.setdefault("login_address_rate_limit", "100000 per minute")
    settings.setdefault("predict_rate_limit", "100000 per minute")
    gateway = GatewayServer(torchserve, tmp / "gateway", jwt_secret=jwt_secret,
                            users_file=users_file, **settings)
    try:
        torchserve.start()
        torchserve.startup_seconds = torchserve.wait_ready()
        gateway.start()
        gateway.wait_up()
    except BaseException:
        gateway.stop()
        torchserve.stop()
        raise
    return torchserve, gateway


@pytest.fixture(scope="session")
def stack(tmp_path_factory, model_store, users_file, jwt_secret):
    """One TorchServe + gateway for the tests that leave them as they found them."""
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("stack"), model_store,
                                      users_file, jwt_secret)
    yield torchserve, gateway
    gateway.stop()
    torchserve.stop()


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory, model_store, users_file, jwt_secret):
    """A TorchServe + gateway of the module's own, for tests that stop or reconfigure them."""
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("private"), model_store,
                                      users_file, jwt_secret, upstream_connect_timeout=1)
    yield torchserve, gateway
    gateway.stop()
    torchserve.stop()


@pytest.fixture(scope="session")
def torchserve(stack):
    return stack[0]


@pytest.fixture(scope="session")
def gateway(stack):
    return stack[1]


def get_token(gateway, username=DEMO_USER, password=DEMO_PASSWORD) -> str:
    response = requests.post(gateway.url + "/token",
                             data={"username": username, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="session")
def user_token(gateway) -> str:
    return get_token(gateway)


@pytest.fixture(scope="session")
def admin_token(gateway) -> str:
    return get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)
