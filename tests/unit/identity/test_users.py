"""Users file and its CLI: hashing, bcrypt's 72-byte limit, passwords never in argv."""

import json
import subprocess
import sys

import pytest

from devstack.servers import ROOT
from gateway.identity.users import UserError, UserStore


@pytest.fixture
def store(tmp_path):
    return UserStore(tmp_path / "users.json")


def test_add_authenticate_remove(store):
    store.set_user("alice", "correct horse", "user")
    assert store.authenticate("alice", "correct horse").role == "user"
    assert store.authenticate("alice", "wrong horse!") is None
    assert store.authenticate("nobody", "correct horse") is None
    store.remove("alice")
    assert store.get("alice") is None
    with pytest.raises(UserError):
        store.remove("alice")


@pytest.mark.real_bcrypt
def test_file_holds_hashes_only(store):
    store.set_user("alice", "correct horse", "admin")
    text = store.path.read_text()
    assert "correct horse" not in text
    assert json.loads(text)["users"]["alice"]["password_hash"].startswith("$2b$12$")


def test_bcrypt_72_byte_limit_is_deliberate(store):
    with pytest.raises(UserError, match="72 bytes"):
        store.set_user("alice", "é" * 37, "user")  # 74 bytes in UTF-8
    store.set_user("alice", "a" * 72, "user")
    assert store.authenticate("alice", "a" * 72)
    # Longer passwords are refused, not truncated into a match.
    assert store.authenticate("alice", "a" * 72 + "tail") is None
    assert store.authenticate("alice", "a" * 10_000) is None


def test_invalid_role_and_short_password(store):
    with pytest.raises(UserError, match="role"):
        store.set_user("alice", "long enough", "root")
    with pytest.raises(UserError, match="at least"):
        store.set_user("alice", "short", "user")


def test_store_sees_edits_made_by_another_process(store):
    store.set_user("alice", "correct horse", "user")
    assert store.get("alice")
    UserStore(store.path).remove("alice")
    assert store.get("alice") is None


def _cli(tmp_path, *args, stdin=""):
    return subprocess.run([sys.executable, "-m", "gateway.cli.users", "--file",
                           str(tmp_path / "users.json"), *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def test_cli_reads_password_from_stdin(tmp_path):
    assert _cli(tmp_path, "add", "bob", "--role", "admin", stdin="s3cret-pass\n").returncode == 0
    assert UserStore(tmp_path / "users.json").authenticate("bob", "s3cret-pass").role == "admin"
    assert _cli(tmp_path, "passwd", "bob", stdin="new-pass-123\n").returncode == 0
    assert UserStore(tmp_path / "users.json").authenticate("bob", "new-pass-123")
    listing = _cli(tmp_path, "list")
    assert listing.stdout.strip() == "bob\tadmin\tdefault"
    assert _cli(tmp_path, "remove", "bob").returncode == 0
    bad = _cli(tmp_path, "remove", "bob")
    assert bad.returncode == 2 and "no user" in bad.stderr


def test_cli_has_no_password_argument(tmp_path):
    result = _cli(tmp_path, "add", "bob", "--password", "x")
    assert result.returncode != 0


def test_cli_add_admin_prints_generated_password_once(tmp_path):
    result = _cli(tmp_path, "add-admin", "root_admin")
    assert result.returncode == 0
    password = result.stdout.strip().rsplit(" ", 1)[-1]
    assert len(password) >= 20
    assert UserStore(tmp_path / "users.json").authenticate("root_admin", password).role == "admin"


def test_shipped_users_file_has_the_demo_user_and_no_admin():
    shipped = UserStore(ROOT / "config" / "users.json")
    assert shipped.authenticate("client_user", "tryClassifier").role == "user"
    assert [u.role for u in shipped.all()] == ["user"]


def test_a_user_limited_to_some_models_holds_its_scopes_for_those_only(store):
    store.set_user("alice", "correct horse", "admin")
    assert store.get("alice").principal().may("models:admin", "anything")
    store.set_models("alice", ("mobilenet",))
    alice = UserStore(store.path).get("alice").principal()  # as another process reads it
    assert alice.may("models:admin", "mobilenet") and alice.may("predict")
    assert not alice.may("predict", "classifier")
    store.set_user("alice", "new horse 123", "admin")  # a new password keeps the limit
    assert store.get("alice").models == ("mobilenet",)
    store.set_models("alice", None)
    assert store.get("alice").principal().uses("classifier")
    with pytest.raises(UserError, match="not a model name"):
        store.set_models("alice", ("../etc",))


def test_client_credentials_stop_working_when_the_secret_is_replaced(store):
    secret = store.set_client("batch", ("predict",))
    assert store.check_client("batch", secret).username == "batch"
    assert store.check_client("batch", secret).username == "batch"  # the remembered match
    assert store.check_client("batch", "wrong") is None
    store.set_client("batch", ("predict",))
    assert store.check_client("batch", secret) is None
    store.set_user("alice", "correct horse", "user")
    assert store.check_client("alice", "correct horse") is None  # a person is no client


def test_cli_limits_a_user_to_models(tmp_path):
    assert _cli(tmp_path, "add-client", "team-b", "--scopes", "predict").returncode == 0
    assert _cli(tmp_path, "models", "team-b", "mobilenet,resnet50").returncode == 0
    assert UserStore(tmp_path / "users.json").get("team-b").models == ("mobilenet", "resnet50")
    assert "models: mobilenet,resnet50" in _cli(tmp_path, "list").stdout
    bad = _cli(tmp_path, "models", "team-b", "a b")
    assert bad.returncode == 2 and "not a model name" in bad.stderr
    assert _cli(tmp_path, "models", "team-b", "all").returncode == 0
    assert UserStore(tmp_path / "users.json").get("team-b").models is None
