"""Model versions as declared state, in the database every replica reaches.

The archives (in chunks, so neither side holds a whole one in memory), the declared
versions with the default, and each replica's report. The admin routes and modelctl
change the declared state (gateway.models.versions); each replica's model agent makes
its TorchServe follow it and reports back (agent.model_agent).
"""

import hashlib
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from core.database.engine import as_utc
from core.database.tables import (model_archive_chunks, model_archives, model_replicas,
                                  model_versions, rollouts)
from core.errors import ApiError
from core.model_history import Actor, append, current_default
from core.signatures import ArchiveSignatures

CHUNK_BYTES = 1 << 20
# A model's name as it may appear in a URL path (TorchServe's own rule is wider).
MODEL_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
MANIFEST = "MAR-INF/MANIFEST.json"
WEIGHTS_RECORD = "weights.json"


class ArchiveError(ApiError):
    """Not an archive of this model, or bytes that do not match their sha256."""

    def __init__(self, detail: str):
        super().__init__(422, detail)


@dataclass(frozen=True)
class Archive:
    id: int
    name: str
    sha256: str
    size_bytes: int
    version: str
    weights: dict | None
    signature: str | None = None  # its Sigstore bundle (core.signatures)

    def shown(self) -> dict:
        return {"archive": self.name, "sha256": self.sha256, "size_bytes": self.size_bytes,
                "signed": self.signature is not None,
                "arch": (self.weights or {}).get("arch"),
                "variant": (self.weights or {}).get("variant")}


@dataclass(frozen=True)
class Workers:
    """What an operator asked TorchServe for, for one version (None: TorchServe's
    default); TorchServe's register and scale parameters, applied by each agent."""

    min_workers: int | None = None
    max_workers: int | None = None
    batch_size: int | None = None
    max_batch_delay: int | None = None  # ms
    response_timeout: int | None = None  # s

    def register_params(self) -> dict:
        """TorchServe's register query parameters for them."""
        params = {"initial_workers": self.min_workers or 1, "batch_size": self.batch_size,
                  "max_batch_delay": self.max_batch_delay,
                  "response_timeout": self.response_timeout}
        return {k: v for k, v in params.items() if v is not None}


WORKER_FIELDS = tuple(Workers.__dataclass_fields__)


@dataclass(frozen=True)
class DeclaredVersion:
    version: str
    archive: Archive
    is_default: bool
    registered_at: datetime
    registered_by: str
    workers: Workers = Workers()


@dataclass(frozen=True)
class ReplicaReport:
    replica_id: str
    default: str | None
    ready: dict  # version -> READY workers
    errors: dict  # version -> why it is not served
    converged: bool
    last_seen: datetime

    def serves(self, version: str) -> bool:
        return self.ready.get(version, 0) > 0

    def shown(self, live: bool) -> dict:
        return {"replica_id": self.replica_id, "live": live, "converged": self.converged,
                "default_version": self.default, "ready_workers": self.ready,
                "errors": self.errors, "last_seen": self.last_seen.isoformat()}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _check_members(mar: zipfile.ZipFile) -> None:
    """Every member read whole, its CRC-32 checked (zipfile does at the end of a read);
    ArchiveError naming the first damaged one."""
    for info in mar.infolist():
        try:
            with mar.open(info) as member:
                while member.read(CHUNK_BYTES):
                    pass
        except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
            raise ArchiveError(f"damaged archive: member {info.filename}: {exc}") from None


def declared_models(engine: Engine) -> list[str]:
    """The models with a declared version, by name."""
    with engine.connect() as connection:
        return list(connection.execute(
            select(model_versions.c.model_name).distinct()
            .where(model_versions.c.retired_at.is_(None))
            .order_by(model_versions.c.model_name)).scalars())


def pushed_archive_model(engine: Engine, name: str) -> str | None:
    """The model of the newest complete archive pushed as `name`, if any."""
    with engine.connect() as connection:
        return connection.execute(
            select(model_archives.c.model_name).where(model_archives.c.name == name,
                                                      model_archives.c.sha256.is_not(None))
            .order_by(model_archives.c.id.desc()).limit(1)).scalar()


def archive_model(path: Path) -> str:
    """The model name in a .mar's manifest (ArchiveError if it has none)."""
    try:
        with zipfile.ZipFile(path) as mar:
            return str(json.loads(mar.read(MANIFEST))["model"]["modelName"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise ArchiveError(f"not a model archive (.mar with {MANIFEST}): {exc}") from None


def read_archive(path: Path, model_name: str) -> tuple[str, dict | None]:
    """(version, weights record) from a .mar's manifest, once every member's bytes match
    their CRC; ArchiveError if it is damaged or not one of `model_name`."""
    try:
        with zipfile.ZipFile(path) as mar:
            _check_members(mar)
            model = json.loads(mar.read(MANIFEST))["model"]
            names = set(mar.namelist())
            weights = json.loads(mar.read(WEIGHTS_RECORD)) if WEIGHTS_RECORD in names else None
        name, version = model["modelName"], str(model["modelVersion"])
    except (zipfile.BadZipFile, KeyError, ValueError, TypeError) as exc:
        raise ArchiveError(f"not a model archive (.mar with {MANIFEST}): {exc}") from None
    if name != model_name:
        raise ArchiveError(f"the archive is model {name}'s, not {model_name}'s")
    return version, weights


def _archive(row) -> Archive:
    return Archive(row.id, row.name, row.sha256, row.size_bytes, row.version,
                   json.loads(row.weights) if row.weights else None, row.signature)


def _now() -> datetime:
    return datetime.now(timezone.utc)


class Catalog:
    def __init__(self, engine: Engine, model_name: str):
        self.engine, self.model_name = engine, model_name

    # ---- archives -------------------------------------------------------------------
    def store_archive(self, path: Path, name: str, actor: Actor,
                      version_named: str | None = None, signature: str | None = None,
                      signatures: ArchiveSignatures | None = None) -> Archive:
        """The archive at `path` as `name` with its signature, stored once per content
        and name (or once per agent, when agents adopt one seed at once); with
        `version_named`, only if that is its manifest's version (ArchiveError); with
        `signatures`, only if its signature passes their rule (SignatureError, checked
        once its members are), and every stored copy takes a new signature that passes
        (signed at last, or by a rotated key)."""
        version, weights = read_archive(path, self.model_name)
        if version_named is not None and version_named != version:
            raise ArchiveError(f"{name} is version {version} by its manifest, not "
                               f"{version_named}: rename it {self.model_name}-{version}.mar "
                               "or name the version it holds")
        if signatures is not None:
            signatures.check(path, signature)
        sha256, size = sha256_of(path), path.stat().st_size
        with self.engine.begin() as connection:
            found = connection.execute(
                select(model_archives).where(model_archives.c.sha256 == sha256,
                                             model_archives.c.name == name)).first()
            if found and (signatures is None or signature in (None, found.signature)):
                return _archive(found)
            if found:  # signed again (a first signature, or a rotated key's): every copy
                connection.execute(update(model_archives).where(
                    model_archives.c.sha256 == sha256, model_archives.c.name == name)
                    .values(signature=signature))
                append(connection, self.model_name, "sign", actor, to_version=version,
                       reason=f"archive {name}, sha256 {sha256}: its signature stored")
                return replace(_archive(found), signature=signature)
            archive_id = connection.execute(insert(model_archives).values(
                name=name, sha256=None, size_bytes=size, model_name=self.model_name,
                version=version, weights=json.dumps(weights) if weights else None,
                signature=signature, uploaded_at=_now(),
                uploaded_by=actor.name)).inserted_primary_key[0]
            with open(path, "rb") as f:
                seq = 0
                while chunk := f.read(CHUNK_BYTES):
                    connection.execute(insert(model_archive_chunks).values(
                        archive_id=archive_id, seq=seq, data=chunk))
                    seq += 1
            # Complete only now: an archive without its sha256 is never loaded.
            connection.execute(update(model_archives).where(model_archives.c.id == archive_id)
                               .values(sha256=sha256))
            append(connection, self.model_name, "push", actor, to_version=version,
                   reason=f"archive {name}, sha256 {sha256}, {size} bytes")
        return Archive(archive_id, name, sha256, size, version, weights, signature)

    def archive_named(self, name: str) -> Archive | None:
        """The newest complete archive stored as `name`."""
        with self.engine.connect() as connection:
            row = connection.execute(
                select(model_archives).where(model_archives.c.name == name,
                                             model_archives.c.model_name == self.model_name,
                                             model_archives.c.sha256.is_not(None))
                .order_by(model_archives.c.id.desc()).limit(1)).first()
        return _archive(row) if row else None

    def fetch_archive(self, archive: Archive, dest: Path) -> None:
        """Write the archive to `dest` only if its bytes match its sha256 (ArchiveError
        otherwise: nothing is written)."""
        partial = dest.with_name(f".{dest.name}.partial")
        digest = hashlib.sha256()
        with self.engine.connect() as connection, open(partial, "wb") as f:
            chunks = connection.execution_options(stream_results=True, yield_per=4).execute(
                select(model_archive_chunks.c.data)
                .where(model_archive_chunks.c.archive_id == archive.id)
                .order_by(model_archive_chunks.c.seq))
            for (data,) in chunks:
                digest.update(data)
                f.write(data)
        if digest.hexdigest() != archive.sha256:
            partial.unlink()
            raise ArchiveError(f"archive {archive.name}: stored bytes have sha256 "
                               f"{digest.hexdigest()}, declared {archive.sha256}: refused")
        os.replace(partial, dest)

    # ---- declared versions ------------------------------------------------------------
    def _declared_query(self):
        return (select(model_versions, model_archives.c.name, model_archives.c.sha256,
                       model_archives.c.size_bytes, model_archives.c.weights,
                       model_archives.c.signature,
                       model_archives.c.version.label("archive_version"))
                .join(model_archives, model_archives.c.id == model_versions.c.archive_id)
                .where(model_versions.c.model_name == self.model_name,
                       model_versions.c.retired_at.is_(None)))

    def declared(self) -> list[DeclaredVersion]:
        """The versions every replica must serve (not retired)."""
        with self.engine.connect() as connection:
            rows = connection.execute(self._declared_query()).all()
        return [DeclaredVersion(
            row.version,
            Archive(row.archive_id, row.name, row.sha256, row.size_bytes, row.archive_version,
                    json.loads(row.weights) if row.weights else None, row.signature),
            row.is_default, as_utc(row.registered_at), row.registered_by,
            Workers(**{f: getattr(row, f) for f in WORKER_FIELDS})) for row in rows]

    def ever_declared(self) -> bool:
        with self.engine.connect() as connection:
            return bool(connection.execute(
                select(func.count()).select_from(model_versions)
                .where(model_versions.c.model_name == self.model_name)).scalar())

    def declare(self, archive: Archive, actor: Actor, workers: Workers = Workers()) -> None:
        """Declare the archive's version (again, if it was retired); 409 while it is.
        A model's first version is its default, as in TorchServe."""
        with self.engine.begin() as connection:
            row = connection.execute(
                select(model_versions).where(model_versions.c.model_name == self.model_name,
                                             model_versions.c.version == archive.version)
            ).first()
            if row is not None and row.retired_at is None:
                raise ApiError(409, f"version {archive.version} is already registered: "
                                    "unregister it first to replace it")
            default = not connection.execute(
                select(func.count()).select_from(model_versions).where(
                    model_versions.c.model_name == self.model_name,
                    model_versions.c.retired_at.is_(None))).scalar()
            values = {"archive_id": archive.id, "is_default": default, "registered_at": _now(),
                      "registered_by": actor.name, "retired_at": None, **vars(workers)}
            if default:
                connection.execute(update(model_versions)
                                   .where(model_versions.c.model_name == self.model_name)
                                   .values(is_default=False))
            if row is None:
                connection.execute(insert(model_versions).values(
                    model_name=self.model_name, version=archive.version, **values))
            else:
                connection.execute(update(model_versions).where(model_versions.c.id == row.id)
                                   .values(**values))
            asked = {k: v for k, v in vars(workers).items() if v is not None}
            append(connection, self.model_name, "register", actor, to_version=archive.version,
                   reason=f"archive {archive.name}, sha256 {archive.sha256}"
                          + (f", {asked}" if asked else ""))

    def adopt(self, archives: list[Archive], default: str, actor: Actor) -> bool:
        """Declare `archives` with `default` if nothing was ever declared for the model;
        False when another agent (or an operator) was first."""
        try:
            with self.engine.begin() as connection:
                if connection.execute(select(func.count()).select_from(model_versions).where(
                        model_versions.c.model_name == self.model_name)).scalar():
                    return False
                for archive in archives:
                    connection.execute(insert(model_versions).values(
                        model_name=self.model_name, version=archive.version,
                        archive_id=archive.id, is_default=archive.version == default,
                        registered_at=_now(), registered_by=actor.name))
                append(connection, self.model_name, "adopt", actor, to_version=default,
                       reason="adopted from the model store: "
                              + ", ".join(a.name for a in archives))
        except IntegrityError:
            return False
        return True

    def set_default(self, version: str, actor: Actor, action: str = "promote",
                    reason: str | None = None) -> None:
        """Make `version` the default; `action` names why in the history (a promotion,
        a rollback)."""
        with self.engine.begin() as connection:
            before = current_default(connection, self.model_name)
            connection.execute(update(model_versions)
                               .where(model_versions.c.model_name == self.model_name)
                               .values(is_default=model_versions.c.version == version))
            append(connection, self.model_name, action, actor, before, version, reason)

    def scale(self, version: str, min_workers: int, max_workers: int, actor: Actor) -> None:
        with self.engine.begin() as connection:
            connection.execute(update(model_versions).where(
                model_versions.c.model_name == self.model_name,
                model_versions.c.version == version,
                model_versions.c.retired_at.is_(None)).values(min_workers=min_workers,
                                                              max_workers=max_workers))
            append(connection, self.model_name, "scale", actor, version, version,
                   f"workers {min_workers}-{max_workers}")

    def retire(self, version: str, actor: Actor) -> None:
        with self.engine.begin() as connection:
            retired = connection.execute(update(model_versions).where(
                model_versions.c.model_name == self.model_name,
                model_versions.c.version == version,
                model_versions.c.retired_at.is_(None)).values(retired_at=_now(), is_default=False))
            if retired.rowcount:
                append(connection, self.model_name, "retire", actor, from_version=version)

    def routed_versions(self) -> list[str]:
        """The versions an active canary or shadow sends requests to (gateway.models.rollouts)."""
        with self.engine.connect() as connection:
            return list(connection.execute(select(rollouts.c.version).where(
                rollouts.c.model_name == self.model_name,
                rollouts.c.state == "active")).scalars())

    # ---- replicas ---------------------------------------------------------------------
    def report(self, replica_id: str, default: str | None, ready: dict, errors: dict,
               converged: bool) -> None:
        values = {"report": json.dumps({"default": default, "ready": ready, "errors": errors}),
                  "converged": converged, "last_seen": _now()}
        key = (model_replicas.c.replica_id == replica_id) & \
              (model_replicas.c.model_name == self.model_name)
        with self.engine.begin() as connection:
            if not connection.execute(update(model_replicas).where(key).values(**values)).rowcount:
                connection.execute(insert(model_replicas).values(
                    replica_id=replica_id, model_name=self.model_name, **values))

    def replicas(self) -> list[ReplicaReport]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(model_replicas).where(
                model_replicas.c.model_name == self.model_name)
                .order_by(model_replicas.c.replica_id)).all()
        reports = []
        for row in rows:
            report = json.loads(row.report)
            reports.append(ReplicaReport(row.replica_id, report["default"], report["ready"],
                                         report["errors"], row.converged, as_utc(row.last_seen)))
        return reports

    def forget_replicas(self, older_than: timedelta) -> None:
        """Drop reports, of any model, nobody refreshed for `older_than` (replicas scaled
        away, models unregistered)."""
        with self.engine.begin() as connection:
            connection.execute(delete(model_replicas).where(
                model_replicas.c.last_seen < _now() - older_than))
