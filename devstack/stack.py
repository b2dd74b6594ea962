"""The real stack for tests: users, a model replica (TorchServe and its agent) serving
the declared versions, and a granian gateway, sharing one database."""

import secrets
import shutil
import threading
from pathlib import Path

import requests

from core.database import schema
from core.settings import Settings
from devstack import images
from devstack.servers import GatewayServer, ReplicaServer
from devstack.waiting import MODEL_READY_S, wait_for
from gateway.identity.keys import KeyRing
from gateway.identity.users import UserStore

DEMO_USER, DEMO_PASSWORD = "client_user", "tryClassifier"
ADMIN_USER, ADMIN_PASSWORD = "ops_admin", secrets.token_urlsafe(12)


def signing_keys(path: Path) -> str:
    """A token signing keys file with one key (gateway.identity.keys), as `make run` makes."""
    KeyRing(path, Settings.jwt_ttl_seconds).ensure()
    return str(path)


def start_stack(tmp: Path, model_store: Path, users_file: Path, jwt_keys: str,
                replica_env: dict | None = None, **settings):
    """A ready replica and a gateway in front of it; nothing left running if either fails.
    The replica adopts classifier-1.0.mar from `model_store`, where the gateway also finds
    the archives it registers by name; `replica_env` is more of the replica's environment."""
    database_url = settings.setdefault("database_url", f"sqlite:///{tmp / 'stack.db'}")
    settings.setdefault("model_store", model_store)
    schema.upgrade(database_url)
    torchserve = ReplicaServer(model_store, tmp / "replica", database_url, "replica-1",
                               **(replica_env or {}))
    # Every test logs in from 127.0.0.1 (the fuzz tests fail hundreds of logins) and
    # the load tests send thousands of predictions as one user: the per-address login
    # limit and the quota are tested on a stack of their own (test_auth_lifecycle.py).
    settings.setdefault("login_address_rate_limit", "100000 per minute")
    settings.setdefault("predict_rate_limit", "100000 per minute")
    # The load tests run 32 clients against one process: shedding past the in-flight
    # bound is tested on a stack of its own (test_overload.py).
    settings.setdefault("max_inflight_predictions", 64)
    gateway = GatewayServer(torchserve, tmp / "gateway", jwt_keys_file=jwt_keys,
                            users_file=users_file, **settings)
    try:
        torchserve.start()
        gateway.start()
        torchserve.wait_ready()
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


class BackgroundPredictions(threading.Thread):
    """Unpinned predictions through `gateway` in a loop until stopped; every answer's
    (status, model_version) is kept, a transport failure as its exception's name."""

    def __init__(self, gateway, token: str):
        super().__init__(daemon=True)
        self.url, self.headers = gateway.url + "/predict", {"Authorization": f"Bearer {token}"}
        self.stop_event, self.results = threading.Event(), []

    def run(self):
        while not self.stop_event.is_set():
            try:
                response = requests.post(self.url, headers=self.headers, timeout=120,
                                         files={"file": ("cat.jpg", images.jpeg())})
                self.results.append((response.status_code, response.json().get("model_version")))
            except (requests.RequestException, ValueError) as exc:
                self.results.append((type(exc).__name__, None))

    def wait_for_more(self, count: int):
        """Let at least `count` more predictions complete."""
        target = len(self.results) + count
        wait_for(lambda: len(self.results) >= target, timeout=MODEL_READY_S,
                 what=f"{count} more background predictions", interval=0.05)

    def stop(self):
        self.stop_event.set()
        self.join(120)
