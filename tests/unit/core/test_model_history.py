"""The model history without a server (core/model_history.py): every change appends a
chained record in its own transaction, the database refuses edits, a hand edit breaks
the chain, and rollback walks back the defaults it records."""

import re
from pathlib import Path

import pytest
from sqlalchemy import text, update
from sqlalchemy.exc import DatabaseError

from core.catalog import Catalog
from core.database import schema
from core.database.engine import database_engine
from core.database.tables import model_history
from core.errors import ApiError
from core.model_history import GUARD, Actor, ModelHistory, check_chain, default_stack
from core.signatures import ArchiveSignatures
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import ModelVersions
from tests.support.small_archives import mar

ANN = Actor("ann", "req-1")


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'history.db'}"
    schema.upgrade(url)
    return database_engine(url)


def served_everywhere(catalog: Catalog, *versions: str, default: str) -> None:
    """One live replica serving `versions`, `default` its default."""
    catalog.report("a", default, {v: 1 for v in versions}, {}, True)


def model(engine, tmp_path, *versions: str) -> ModelVersions:
    """A model with `versions` registered in that order (the first: its default)."""
    catalog = Catalog(engine, "classifier")
    models = ModelVersions(catalog, ArchiveSignatures("", allow_unsigned=True), str(tmp_path),
                           stale_seconds=30, wait_seconds=0)
    for version in versions:
        mar(tmp_path / f"classifier-{version}.mar", version)
        models.register(f"classifier-{version}.mar", ANN, wait=False)
    served_everywhere(catalog, *versions, default=versions[0])
    return models


def actions(engine) -> list[tuple]:
    return [(r.action, r.actor, r.from_version, r.to_version, r.default_version)
            for r in ModelHistory(engine).records("classifier")]


def test_each_change_appends_a_record_with_its_actor_and_the_default_after(engine, tmp_path):
    models = model(engine, tmp_path, "9.2", "2.0")
    models.promote("2.0", ANN)
    models.scale("2.0", 2, 3, Actor("bob"), wait=False)
    models.unregister("9.2", ANN)
    assert actions(engine) == [
        ("push", "ann", None, "9.2", None), ("register", "ann", None, "9.2", "9.2"),
        ("push", "ann", None, "2.0", "9.2"), ("register", "ann", None, "2.0", "9.2"),
        ("promote", "ann", "9.2", "2.0", "2.0"), ("scale", "bob", "2.0", "2.0", "2.0"),
        ("retire", "ann", "9.2", None, "2.0")]
    newest = ModelHistory(engine).page("classifier", 2)
    assert [r.action for r in newest] == ["retire", "scale"]
    assert newest[0].request_id == "req-1" and "sha256" in ModelHistory(engine).page(
        "classifier", 1, before=newest[-1].id - 2)[0].reason
    assert ModelHistory(engine).verify().ok and ModelHistory(engine).verify().checked == 7


def test_rollouts_record_their_start_change_and_end_with_the_guard_as_actor(engine, tmp_path):
    model(engine, tmp_path, "1.0", "2.0")
    store = RolloutStore(engine, "classifier")
    rollout = store.start("canary", "2.0", 10, False, Guard(), ANN)
    store.start("canary", "2.0", 20, True, Guard(), ANN)
    store.end(rollout, "rolled_back", "error_rate 0.5", GUARD)
    assert not store.end(rollout, "aborted", "too late", ANN)  # ended already: no record
    records = ModelHistory(engine).page("classifier", 3)
    assert [(r.action, r.actor, r.to_version) for r in records] == [
        ("rollout-rollback", "guard", "2.0"), ("rollout-change", "ann", "2.0"),
        ("rollout-start", "ann", "2.0")]
    assert "20%, sticky" in records[1].reason and "error_rate 0.5" in records[0].reason


def test_the_database_refuses_to_edit_or_delete_a_record(engine, tmp_path):
    model(engine, tmp_path, "1.0")
    for statement in (update(model_history).values(actor="mallory"), model_history.delete()):
        with pytest.raises(DatabaseError, match="append-only"), engine.begin() as connection:
            connection.execute(statement)
    assert len(list(ModelHistory(engine).records())) == 2


@pytest.mark.parametrize("tamper, broken, intact", [
    ("UPDATE model_history SET actor = 'mallory' WHERE id = 2", 2, 1),
    ("DELETE FROM model_history WHERE id = 2", 3, 1),
    ("UPDATE model_history SET to_version = '6.6' WHERE id = 3", 3, 2),
])
def test_a_hand_edit_breaks_the_chain_where_it_was_made(engine, tmp_path, tamper, broken,
                                                        intact):
    model(engine, tmp_path, "1.0", "2.0")
    assert ModelHistory(engine).verify().checked == 4
    with engine.begin() as connection:  # as the database's owner could
        connection.execute(text("DROP TRIGGER model_history_no_update"))
        connection.execute(text("DROP TRIGGER model_history_no_delete"))
        connection.execute(text(tamper))
    check = ModelHistory(engine).verify()
    assert not check.ok and check.broken_at == broken and check.checked == intact


def test_rollback_returns_to_the_previous_default_then_the_one_before(engine, tmp_path):
    models = model(engine, tmp_path, "9.2", "1.0", "2.0", "3.0")
    catalog = models.catalog
    models.promote("2.0", ANN)  # a lower version than the default it replaces
    served_everywhere(catalog, "9.2", "1.0", "2.0", "3.0", default="2.0")
    models.promote("3.0", ANN)
    assert models.rollback(ANN)[0]["default_version"] == "2.0"
    assert models.rollback(ANN)[0]["default_version"] == "9.2"  # not 1.0, never a default
    with pytest.raises(ApiError, match="no earlier default") as none_left:
        models.rollback(ANN)
    assert none_left.value.status == 409
    assert models.rollback(ANN, to="1.0")[0]["default_version"] == "1.0"
    assert models.rollback(ANN)[0]["default_version"] == "9.2"
    assert ModelHistory(engine).defaults("classifier") == ["9.2"]


def test_rollback_skips_a_default_since_unregistered(engine, tmp_path):
    models = model(engine, tmp_path, "1.0", "2.0", "3.0")
    models.promote("2.0", ANN)
    models.promote("3.0", ANN)
    models.unregister("2.0", ANN)
    assert models.rollback(ANN)[0]["default_version"] == "1.0"


def test_without_history_rollback_asks_for_a_version(engine, tmp_path):
    models = model(engine, tmp_path, "1.0", "2.0")
    with engine.begin() as connection:  # a deployment from before the history
        connection.execute(text("DROP TRIGGER model_history_no_delete"))
        connection.execute(model_history.delete())
    models.promote("2.0", ANN)
    with pytest.raises(ApiError, match="rollback --to VERSION") as unknown:
        models.rollback(ANN)
    assert unknown.value.status == 409
    with pytest.raises(ApiError, match="already the default"):
        models.rollback(ANN, to="2.0")
    assert models.rollback(ANN, to="1.0")[0]["default_version"] == "1.0"


def test_the_default_stack_empties_when_a_model_loses_its_last_version():
    records = [record(action, default) for action, default in (
        ("register", "1.0"), ("promote", "2.0"), ("retire", None), ("register", "5.0"))]
    assert default_stack(records) == ["5.0"]
    assert check_chain([]).ok


def record(action: str, default: str | None):
    """A record as default_stack reads it."""
    return type("R", (), {"action": action, "default_version": default})()


def test_no_route_or_command_can_edit_or_delete_a_record():
    """Routes, commands and the agent reach the table only through core/model_history.py,
    which inserts and reads (and the database refuses the rest: above)."""
    root = Path(__file__).resolve().parents[3]
    sources = [p for package in ("core", "gateway", "agent") for p in (root / package).rglob("*.py")
               if "migrations" not in p.parts]
    users = {str(p.relative_to(root)) for p in sources
             if re.search(r"tables import[^\n]*(\([^)]*)?\bmodel_history\b", p.read_text())}
    assert users == {"core/model_history.py"}
    code = (root / "core" / "model_history.py").read_text()
    assert "insert(model_history)" in code
    assert not re.search(r"\b(update|delete)\(model_history|model_history\.(update|delete)", code)
