"""The end-to-end tests' fixtures: model archives, a real TorchServe, a real granian
gateway."""

import shutil
from pathlib import Path

import pytest

from devstack.backends import Postgres, postgres_available, required_or_skip
from devstack.servers import ROOT
from devstack.signing import use_signing_key
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, signing_keys, start_stack
from modelbuild import archive, weights


@pytest.fixture(scope="session", autouse=True)
def signing_key(tmp_path_factory) -> Path:
    """Every archive the end-to-end tests build is signed with this key, and every gateway
    and agent they start trusts it (the trusted keys file's path)."""
    return use_signing_key(tmp_path_factory.mktemp("model-signing"))


@pytest.fixture(scope="session")
def model_store(tmp_path_factory) -> Path:
    """classifier-1.0.mar (seed 0) and classifier-2.0.mar (seed 1): predictions differ."""
    store = tmp_path_factory.mktemp("model_store")
    archive.build("1.0", weights.random_weights(0), store)
    archive.build("2.0", weights.random_weights(1), store)
    return store


@pytest.fixture(scope="session")
def users_file(tmp_path_factory) -> Path:
    from gateway.identity.users import UserStore

    path = tmp_path_factory.mktemp("users") / "users.json"
    shutil.copy(ROOT / "config" / "users.json", path)
    UserStore(path).set_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
    return path


@pytest.fixture(scope="session")
def jwt_keys(tmp_path_factory) -> str:
    """The session's signing keys file, shared by every gateway it starts."""
    return signing_keys(tmp_path_factory.mktemp("keys") / "jwt-keys.json")


@pytest.fixture(scope="session")
def stack(tmp_path_factory, model_store, users_file, jwt_keys):
    """One TorchServe + gateway for the tests that leave them as they found them."""
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("stack"), model_store,
                                      users_file, jwt_keys)
    yield torchserve, gateway
    gateway.stop()
    torchserve.stop()


@pytest.fixture(scope="module")
def private_stack(tmp_path_factory, model_store, users_file, jwt_keys):
    """A TorchServe + gateway of the module's own, for tests that stop or reconfigure them."""
    torchserve, gateway = start_stack(tmp_path_factory.mktemp("private"), model_store,
                                      users_file, jwt_keys, upstream_connect_timeout=1)
    yield torchserve, gateway
    gateway.stop()
    torchserve.stop()


@pytest.fixture(scope="session")
def torchserve(stack):
    return stack[0]


@pytest.fixture(scope="session")
def gateway(stack):
    return stack[1]


@pytest.fixture(scope="session")
def user_token(gateway) -> str:
    return get_token(gateway)


@pytest.fixture(scope="session")
def admin_token(gateway) -> str:
    return get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """An empty database on SQLite, then on a real PostgreSQL of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'predictions.db'}"
        return
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    server = Postgres().start()
    try:
        yield server.url
    finally:
        server.stop()
