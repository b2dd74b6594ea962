"""Model versions as declared state without a server: the catalog (archives, declared
versions, replicas' reports) on a real SQLite database, and ModelVersions' rules over
it (core/catalog.py, gateway/models/versions.py, agent/model_agent.py)."""

import io
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select, update

from agent.model_agent import ModelReconciler, store_file_name
from core.catalog import CHUNK_BYTES, ArchiveError, Catalog, read_archive
from core.database import schema
from core.database.engine import database_engine
from core.database.tables import model_archive_chunks, model_archives, model_replicas
from core.errors import ApiError
from core.model_history import Actor
from core.signatures import ArchiveSignatures
from gateway.models.control_snapshot import ModelState
from gateway.models.versions import ModelVersions
from tests.support.small_archives import mar
from tests.unit.core.test_signatures import new_key, signed

OPS, AGENT = Actor("ops"), Actor("agent")
UNSIGNED_ALLOWED = ArchiveSignatures("", allow_unsigned=True)  # signing: test_signatures


@pytest.fixture
def catalog(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    schema.upgrade(url)
    return Catalog(database_engine(url), "classifier")


def versions(catalog, tmp_path, wait_seconds=0.2) -> ModelVersions:
    return ModelVersions(catalog, UNSIGNED_ALLOWED, str(tmp_path), stale_seconds=30,
                         wait_seconds=wait_seconds)


def served(models: ModelVersions) -> ModelState:
    """What a gateway's control snapshot would read now."""
    return ModelState(models.name, *models.serving(), None)


def test_an_archive_goes_in_by_chunks_and_comes_out_checked(catalog, tmp_path):
    source = mar(tmp_path / "classifier-2.0.mar", "2.0", padding=3 * CHUNK_BYTES)
    stored = catalog.store_archive(source, source.name, OPS)
    assert (stored.version, stored.size_bytes) == ("2.0", source.stat().st_size)
    assert stored.weights == {"arch": "resnet18", "variant": "fp32"}
    assert catalog.store_archive(source, source.name, OPS).id == stored.id  # stored once
    copy = tmp_path / "copy.mar"
    catalog.fetch_archive(stored, copy)
    assert copy.read_bytes() == source.read_bytes()


def test_a_new_signature_reaches_every_stored_copy(catalog, tmp_path):
    """Two agents adopting one seed at once may each store it: signed again by a rotated
    key, both copies take the signature, whichever one a version was declared with."""
    source = mar(tmp_path / "classifier-1.0.mar", "1.0")
    first = catalog.store_archive(source, source.name, OPS)
    with catalog.engine.begin() as connection:
        row = connection.execute(select(model_archives).where(
            model_archives.c.id == first.id)).mappings().one()
        connection.execute(insert(model_archives).values(
            {k: v for k, v in row.items() if k != "id"}))
    key, trusted = tmp_path / "key.pem", tmp_path / "trusted.pem"
    trusted.write_bytes(new_key(key))
    signature = signed(source, key)
    catalog.store_archive(source, source.name, OPS, signature=signature,
                          signatures=ArchiveSignatures(str(trusted), allow_unsigned=False))
    with catalog.engine.begin() as connection:
        assert connection.execute(select(model_archives.c.signature)).scalars().all() == [
            signature, signature]


def test_a_tampered_archive_is_refused_and_never_written(catalog, tmp_path):
    stored = catalog.store_archive(mar(tmp_path / "a.mar", "2.0"), "a.mar", OPS)
    with catalog.engine.begin() as connection:
        connection.execute(update(model_archive_chunks).values(data=b"not the archive"))
    with pytest.raises(ArchiveError, match="refused"):
        catalog.fetch_archive(stored, tmp_path / "out.mar")
    assert list(tmp_path.glob("*out.mar*")) == []


@pytest.mark.parametrize("content, message", [
    (b"plain bytes", "not a model archive"),
    (None, "model other's"),
])
def test_only_archives_of_this_model_are_taken(tmp_path, content, message):
    path = tmp_path / "x.mar"
    if content is None:
        mar(path, "1.0", model="other")
    else:
        path.write_bytes(content)
    with pytest.raises(ArchiveError, match=message):
        read_archive(path, "classifier")


def test_declare_retire_and_adopt(catalog, tmp_path):
    one = catalog.store_archive(mar(tmp_path / "one.mar", "1.0"), "one.mar", AGENT)
    two = catalog.store_archive(mar(tmp_path / "two.mar", "2.0"), "two.mar", OPS)
    assert catalog.adopt([one], "1.0", AGENT) is True
    assert catalog.adopt([two], "2.0", AGENT) is False  # only on an empty catalog
    catalog.declare(two, OPS)
    with pytest.raises(ApiError) as refused:
        catalog.declare(two, OPS)
    assert refused.value.status == 409
    catalog.set_default("2.0", OPS)
    assert {d.version: d.is_default for d in catalog.declared()} == {"1.0": False, "2.0": True}
    catalog.retire("1.0", OPS)
    assert [d.version for d in catalog.declared()] == ["2.0"]
    catalog.declare(one, OPS)  # declared again after its retirement
    assert sorted(d.version for d in catalog.declared()) == ["1.0", "2.0"]


def test_versions_follow_only_what_every_live_replica_serves(catalog, tmp_path):
    one = catalog.store_archive(mar(tmp_path / "one.mar", "1.0"), "one.mar", AGENT)
    catalog.adopt([one], "1.0", AGENT)
    mar(tmp_path / "classifier-2.0.mar", "2.0")
    models = versions(catalog, tmp_path)
    with pytest.raises(ApiError) as nobody:
        served(models).ready()
    assert nobody.value.status == 503
    catalog.report("a", "1.0", {"1.0": 1}, {}, True)
    catalog.report("b", "1.0", {"1.0": 1}, {}, True)
    assert served(models).ready()["replicas"] == 2

    body, status = models.register("classifier-2.0.mar", OPS)  # no agent loads it here
    assert status == 202 and body["pending"] == ["a (loading)", "b (loading)"]
    catalog.report("a", "1.0", {"1.0": 1, "2.0": 1}, {}, True)
    with pytest.raises(ApiError, match="still loading on: b") as refused:
        models.promote("2.0", OPS)
    assert refused.value.status == 409
    # b stops reporting: once stale, it no longer counts.
    with catalog.engine.begin() as connection:
        connection.execute(update(model_replicas).where(model_replicas.c.replica_id == "b")
                           .values(last_seen=datetime.now(timezone.utc) - timedelta(minutes=5)))
    models.require_served("2.0")
    body, status = models.promote("2.0", OPS)
    assert status == 202 and body["pending"] == ["a (default 1.0)"]
    catalog.report("a", "2.0", {"1.0": 1, "2.0": 1}, {}, True)
    overview = models.overview()
    assert overview["default_version"] == "2.0" and overview["replicas_agree"] is True
    assert [(r["replica_id"], r["live"]) for r in overview["replicas"]] == [("a", True),
                                                                           ("b", False)]


def test_push_is_bounded_and_needs_bytes(catalog, tmp_path):
    models = versions(catalog, tmp_path)
    archive = mar(tmp_path / "a.mar", "3.0", padding=CHUNK_BYTES)
    with pytest.raises(ApiError) as too_big:
        models.push(io.BytesIO(archive.read_bytes()), "classifier-3.0.mar", OPS,
                    max_bytes=1000)
    assert too_big.value.status == 413
    with pytest.raises(ApiError) as empty:
        models.push(io.BytesIO(b""), "classifier-3.0.mar", OPS, max_bytes=1000)
    assert empty.value.status == 422
    with pytest.raises(ApiError) as named:
        models.push(io.BytesIO(b"x"), "../a.mar", OPS, max_bytes=1000)
    assert named.value.status == 422
    pushed = models.push(io.BytesIO(archive.read_bytes()), "a.mar", OPS, max_bytes=1 << 30,
                         version="3.0")
    assert pushed["version"] == "3.0" and pushed["size_bytes"] == archive.stat().st_size


def test_push_checks_the_whole_archive_and_the_version_it_is_named_for(catalog, tmp_path):
    models = versions(catalog, tmp_path)
    good = mar(tmp_path / "classifier-8.1.mar", "8.1", padding=4 * CHUNK_BYTES).read_bytes()

    def push(data: bytes, name: str, version=None) -> str:
        with pytest.raises(ApiError) as refused:
            models.push(io.BytesIO(data), name, OPS, max_bytes=1 << 30, version=version)
        assert refused.value.status == 422
        return refused.value.detail

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF  # a byte of model.pt's payload
    assert push(bytes(flipped), "classifier-8.1.mar").startswith(
        "damaged archive: member model.pt: Bad CRC-32")
    assert push(good, "classifier-8.2.mar") == (
        "classifier-8.2.mar is version 8.1 by its manifest, not 8.2: rename it "
        "classifier-8.1.mar or name the version it holds")
    assert "8.1 by its manifest, not 9" in push(good, "any.mar", version="9")
    assert push(good, "any.mar").startswith("name the archive classifier-<version>.mar")
    assert push(good[:len(good) // 2], "classifier-8.1.mar").startswith("not a model archive")
    assert models.push(io.BytesIO(good), "classifier-8.1.mar", OPS, 1 << 30)["version"] == "8.1"


def test_the_agent_names_files_by_content_and_says_what_is_missing(catalog, tmp_path):
    one = catalog.store_archive(mar(tmp_path / "one.mar", "1.0"), "classifier-1.0.mar", OPS)
    assert store_file_name(one) == f"classifier-1.0.{one.sha256[:16]}.mar"
    catalog.adopt([one], "1.0", AGENT)
    declared = catalog.declared()
    assert ModelReconciler._pending(declared, {}, None, {}) == "loading 1.0"
    assert ModelReconciler._pending(declared, {"1.0": 1}, None, {}) == \
        "default is None, declared 1.0"
    assert ModelReconciler._pending(declared, {"1.0": 1}, "1.0", {}) == ""
    assert ModelReconciler._pending(declared, {}, None, {"1.0": "failed"}) == "cannot load 1.0"
    assert ModelReconciler._pending([], {}, None, {}) == "nothing is declared"
