"""The real stack for tests and the bench: users, a READY TorchServe and a gunicorn gateway."""

import secrets
import shutil
from pathlib import Path

import requests

from gateway.users import UserStore

from tests.support.servers import GatewayServer, TorchServeServer

DEMO_USER, DEMO_PASSWORD = "client_user", "tryClassifier"
ADMIN_USER, ADMIN_PASSWORD = "ops_admin", secrets.token_urlsafe(12)


def start_stack(tmp: Path, model_store: Path, users_file: Path, jwt_secret: str, **settings):
    """A READY TorchServe and a gateway in front of it; nothing left running if either fails."""
    torchserve = TorchServeServer(model_store, tmp / "torchserve")
    # Every test logs in from 127.0.0.1 (the fuzz tests fail hundreds of logins) and
    # the load tests send thousands of predictions as one user: the per-address login
    # limit and the quota are tested on a stack of their own (test_auth_lifecycle.py).
    settings.setdefault("login_address_rate_limit", "100000 per minute")
    settings.setdefault("predict_rate_limit", "100000 per minute")
    # The load tests run 32 clients against one process: shedding past the in-flight
    # bound is tested on a stack of its own (test_overload.py).
    settings.setdefault("max_inflight_predictions", 64)
    gateway = GatewayServer(torchserve, tmp / "gateway", jwt_secret=jwt_secret,
                            users_file=users_file, **settings)
    try:
        torchserve.start()
        torchserve.wait_ready()
        gateway.start()
        gateway.wait_up()
    except BaseException:
        gateway.stop()
        torchserve.stop()
        raise
    return torchserve, gateway


def get_token(gateway, username=DEMO_USER, password=DEMO_PASSWORD) -> str:
    response = requests.post(gateway.url + "/token",
                             data={"username": username, "password": password}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def users_file_with(users_file: Path, dest: Path, users) -> UserStore:
    """A copy of the tests' users file at `dest` with more users: (name, password) pairs,
    role user."""
    shutil.copy(users_file, dest)
    store = UserStore(dest)
    for username, password in users:
        store.set_user(username, password, "user")
    return store
