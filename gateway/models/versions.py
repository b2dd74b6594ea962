"""Model versions as operators see them: register, push, promote, unregister, roll back,
and which replicas serve what.

Each call changes the declared state (core.catalog), then waits, bounded, until
every live replica's agent reports that its TorchServe follows it. Shared by the admin
routes, the control snapshot (gateway.models.control_snapshot), /v2 and the operator CLI
(modelctl).
"""

import re
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Callable

from sqlalchemy.engine import Engine

from core.catalog import (CHUNK_BYTES, MODEL_NAME_PATTERN, Catalog, DeclaredVersion,
                          ReplicaReport, Workers, archive_model, declared_models,
                          pushed_archive_model)
from core.errors import ApiError, unavailable
from core.model_history import Actor, ModelHistory
from core.settings import Settings
from core.signatures import ArchiveSignatures, signature_beside

# A plain archive file name: no URL, no path, no "..".
ARCHIVE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.mar$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
POLL_SECONDS = 0.5


def check_version(version: str) -> str:
    """A version as it may appear in a URL path: 1-32 letters, digits, '.', '_', '-'."""
    if not VERSION_PATTERN.match(version) or ".." in version:
        raise ApiError(422, "model version must be 1-32 letters, digits, '.', '_' or '-'")
    return version


def check_model_name(name: str) -> str:
    if not MODEL_NAME_PATTERN.match(name):
        raise ApiError(404, f"model {name[:64]} is not registered")
    return name


def check_archive_name(name) -> str:
    if not isinstance(name, str) or not ARCHIVE_PATTERN.match(name):
        raise ApiError(422, "archive must be a plain .mar file name (no URL, no path, no '..')")
    return name


def archive_too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"archive is over MAX_ARCHIVE_BYTES ({max_bytes} bytes)")


def version_key(version: str) -> tuple:
    """1.10 sorts after 1.9: numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p)
                 for p in re.split(r"[.-]", version))


class DefaultVersion(ApiError):
    """The default version cannot be unregistered while others are declared."""

    def __init__(self, version: str):
        super().__init__(409, f"version {version} is the default: promote another one first")


@dataclass(frozen=True)
class Serving:
    """A declared version on the live replicas, as they last reported it."""

    replicas: int
    ready_workers: int
    cannot_load: bool = False  # every live replica failed to load it: routed to none


@dataclass(frozen=True)
class Fleet:
    """The replicas' reports at one moment; `live` ones reported within the stale bound."""

    live: tuple[ReplicaReport, ...]
    stale: tuple[ReplicaReport, ...]

    def missing(self, version: str) -> list[str]:
        """Live replicas that do not serve `version` yet, with why."""
        return [f"{r.replica_id} ({r.errors.get(version, 'loading')})"
                for r in self.live if not r.serves(version)]

    def cannot_load(self, version: str, since: datetime | None = None) -> list[str]:
        """Every live replica, each reporting (since `since`) that `version` cannot
        load, with why; [] while any serves it, loads it or has not reported since."""
        if not self.live or any(r.serves(version) or version not in r.errors
                                or (since and r.last_seen < since) for r in self.live):
            return []
        return [f"{r.replica_id} ({r.errors[version]})" for r in self.live]

    def not_defaulting(self, version: str) -> list[str]:
        return [f"{r.replica_id} (default {r.default})" for r in self.live
                if r.default != version]

    def shown(self) -> list[dict]:
        return [r.shown(True) for r in self.live] + [r.shown(False) for r in self.stale]


class Models:
    """Every model: MODEL_NAME, and each one with a declared version."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings, self.engine, self.default = settings, engine, settings.model_name
        self.signatures = ArchiveSignatures.from_settings(settings)

    def names(self) -> list[str]:
        return sorted({self.default, *declared_models(self.engine)})

    def versions(self, name: str, known: bool = True) -> "ModelVersions":
        """The model's versions; 404 when `known` and nothing of it is declared."""
        check_model_name(name)
        if known and name not in self.names():
            raise ApiError(404, f"model {name} is not registered")
        settings = self.settings
        return ModelVersions(Catalog(self.engine, name), self.signatures, settings.model_store,
                             settings.replica_stale_seconds, settings.version_wait_seconds,
                             settings.max_workers_per_version)

    def archive_model(self, archive: str) -> str:
        """The model an archive in the model store, or pushed, is of."""
        local = Path(self.settings.model_store) / check_archive_name(archive)
        if local.is_file():
            return archive_model(local)
        if (name := pushed_archive_model(self.engine, archive)) is not None:
            return name
        raise ApiError(404, f"archive {archive} is not in the model store and was not pushed")


class ModelVersions:
    def __init__(self, catalog: Catalog, signatures: ArchiveSignatures, model_store: str,
                 stale_seconds: float, wait_seconds: float,
                 max_workers: int = Settings.max_workers_per_version):
        self.catalog, self.name, self.signatures = catalog, catalog.model_name, signatures
        self.model_store = Path(model_store)
        self.stale = timedelta(seconds=stale_seconds)
        self.wait_seconds = wait_seconds
        self.max_workers = max_workers  # TorchServe workers of one version on one replica

    # ---- what is declared and served ----------------------------------------------------
    def _declared(self) -> dict[str, DeclaredVersion]:
        return {d.version: d for d in self.catalog.declared()}

    def default_version(self) -> str:
        for declared in self._declared().values():
            if declared.is_default:
                return declared.version
        raise unavailable(f"model {self.name} has no declared default version")

    def registered(self, required: str | None = None) -> list[str]:
        """The declared versions; ApiError 404 when `required` is not one of them."""
        versions = sorted(self._declared(), key=version_key)
        if required is not None and required not in versions:
            raise ApiError(404, f"model {self.name} version {required} is not registered")
        return versions

    def fleet(self) -> Fleet:
        now = datetime.now(timezone.utc)
        reports = self.catalog.replicas()
        return Fleet(tuple(r for r in reports if now - r.last_seen <= self.stale),
                     tuple(r for r in reports if now - r.last_seen > self.stale))

    def require_served(self, version: str) -> None:
        """404 unless declared; 409 unless every live replica serves it (and one does)."""
        self.registered(required=version)
        fleet = self.fleet()
        if not fleet.live:
            raise ApiError(409, f"no live replica serves model {self.name}")
        if missing := fleet.missing(version):
            raise ApiError(409, f"version {version} is still loading on: {', '.join(missing)}")

    def serving(self) -> tuple[str | None, dict[str, Serving]]:
        """The declared default, and each declared version on the live replicas."""
        declared, fleet = self.catalog.declared(), self.fleet()
        default = next((d.version for d in declared if d.is_default), None)
        return default, {d.version: Serving(
            sum(r.serves(d.version) for r in fleet.live),
            sum(r.ready.get(d.version, 0) for r in fleet.live),
            bool(fleet.cannot_load(d.version)))
            for d in declared}

    def overview(self) -> dict:
        """Every declared version with its archive and READY workers, every replica's
        report, and whether the live ones agree with the declared state."""
        declared, fleet = self._declared(), self.fleet()
        default = next((d.version for d in declared.values() if d.is_default), None)
        versions = [{
            "version": d.version, "default": d.is_default, **d.archive.shown(),
            "weights": d.archive.weights, "registered_at": d.registered_at.isoformat(),
            "registered_by": d.registered_by, "workers": vars(d.workers),
            "ready_workers": sum(r.ready.get(d.version, 0) for r in fleet.live),
            "replicas_serving": sum(r.serves(d.version) for r in fleet.live),
            "load_errors": {r.replica_id: r.errors[d.version] for r in fleet.live
                            if d.version in r.errors},
        } for d in sorted(declared.values(), key=lambda d: version_key(d.version))]
        agree = bool(fleet.live) and all(
            r.converged and r.default == default and all(r.serves(v) for v in declared)
            for r in fleet.live)
        return {"model_name": self.name, "default_version": default, "versions": versions,
                "replicas": fleet.shown(), "replicas_agree": agree}

    def _wait(self, done: Callable[[Fleet], list[str]],
              failed: Callable[[Fleet], list[str]] = lambda fleet: [],
              wait: bool = True) -> tuple[list, list]:
        """Poll the live replicas until `done` lists none still pending, or `failed`
        lists every one of them, at most wait_seconds (once without `wait`);
        (pending, failed) then."""
        deadline = time.monotonic() + (self.wait_seconds if wait else 0)
        while True:
            fleet = self.fleet()
            pending = done(fleet) if fleet.live else ["no live replica"]
            if cannot := failed(fleet):
                return pending, cannot
            if not pending or time.monotonic() >= deadline:
                return pending, []
            time.sleep(POLL_SECONDS)

    def _answer(self, waited: tuple[list, list], what: str) -> tuple[dict, int]:
        """(body, 200) once every live replica follows; (body, 202) with who does not;
        (body, 422) when none can load it."""
        pending, failed = waited
        body = {**self.overview(), "pending": pending}
        if failed:
            body["status"] = (f"{what}: declared, but no live replica can load it: "
                              f"{', '.join(failed)}; retire it, or push a good archive")
            return body, 422
        if pending:
            body["status"] = f"{what}: declared; not yet on {', '.join(pending)}"
            return body, 202
        body["status"] = f"{what}: every live replica follows"
        return body, 200

    # ---- changes ------------------------------------------------------------------------
    def named_version(self, name: str, version: str | None) -> str:
        """The version an operator says an archive holds: `version`, or the one its name
        <model>-<version>.mar gives (its manifest must agree: Catalog.store_archive)."""
        if version is not None:
            return check_version(version)
        if name.startswith(f"{self.name}-"):
            return check_version(name.removeprefix(f"{self.name}-").removesuffix(".mar"))
        raise ApiError(422, f"name the archive {self.name}-<version>.mar, or give the "
                            "version it holds (version=)")

    def push(self, stream: BinaryIO, name: str, actor: Actor, max_bytes: int,
             version: str | None = None, signature: str | None = None) -> dict:
        """Store an uploaded archive (read in chunks, at most max_bytes), whole, of the
        version its name (or `version`) says, and signed as the signatures' rule wants."""
        named = self.named_version(check_archive_name(name), version)
        with tempfile.NamedTemporaryFile(suffix=".mar") as spool:
            size = 0
            while chunk := stream.read(CHUNK_BYTES):
                size += len(chunk)
                if size > max_bytes:
                    raise archive_too_large(max_bytes)
                spool.write(chunk)
            spool.flush()
            if not size:
                raise ApiError(422, "send the archive's bytes as the request body")
            archive = self.catalog.store_archive(Path(spool.name), name, actor, named, signature,
                                                 self.signatures)
        return {"model_name": self.name, "version": archive.version, **archive.shown()}

    def register(self, name, actor: Actor, workers: Workers = Workers(),
                 wait: bool = True) -> tuple[dict, int]:
        """Declare the archive `name`: the local model store's file (signed by the file
        beside it) if there is one, else the one pushed under that name (its signature
        checked at the push). A name <model>-<version>.mar must say the version its
        manifest holds; any other name takes the manifest's."""
        local = self.model_store / check_archive_name(name)
        if local.is_file():
            named = (self.named_version(name, None) if name.startswith(f"{self.name}-")
                     else None)
            archive = self.catalog.store_archive(local, name, actor, named,
                                                 signature_beside(local), self.signatures)
        elif (archive := self.catalog.archive_named(name)) is None:
            raise ApiError(404, f"archive {name} is not in the model store and was not pushed")
        elif archive.signature is None:
            self.signatures.unsigned()  # pushed while unsigned ones were allowed
        self.check_workers(workers.min_workers, workers.max_workers)
        since = datetime.now(timezone.utc)
        self.catalog.declare(archive, actor, workers=workers)
        waited = self._wait(lambda fleet: fleet.missing(archive.version),
                            lambda fleet: fleet.cannot_load(archive.version, since), wait)
        return self._answer(waited, f"register {archive.version}")

    def check_workers(self, min_workers: int | None, max_workers: int | None) -> None:
        """1 <= min <= max <= MAX_WORKERS_PER_VERSION (or neither given): a declared
        version always has a worker (unregister it to stop serving it); ApiError 422."""
        if min_workers is None and max_workers is None:
            return
        low = 1 if min_workers is None else min_workers
        high = low if max_workers is None else max_workers
        if not 1 <= low <= high <= self.max_workers:
            raise ApiError(422, "workers must be 1 <= min <= max <= "
                                f"{self.max_workers} (MAX_WORKERS_PER_VERSION)")

    def scale(self, version: str, min_workers: int, max_workers: int, actor: Actor,
              wait: bool = True) -> tuple[dict, int]:
        """Declare the version's worker bounds; answered once every live replica runs
        at least `min_workers` READY workers of it."""
        check_version(version)
        self.registered(required=version)
        self.check_workers(min_workers, max_workers)
        self.catalog.scale(version, min_workers, max_workers, actor)
        waited = self._wait(lambda fleet: [r.replica_id for r in fleet.live
                                           if r.ready.get(version, 0) < min_workers], wait=wait)
        return self._answer(waited, f"scale {version} to {min_workers}-{max_workers} workers")

    def promote(self, version: str, actor: Actor, action: str = "promote",
                reason: str | None = None) -> tuple[dict, int]:
        check_version(version)
        self.require_served(version)
        self.catalog.set_default(version, actor, action, reason)
        waited = self._wait(lambda fleet: fleet.not_defaulting(version))
        return self._answer(waited, f"{action} {version}")

    def unregister(self, version: str, actor: Actor, last: bool = False) -> tuple[dict, int]:
        """Retire a version; the default only when `last` allows it and it is the
        model's only version (TorchServe's rule: the model goes with it)."""
        check_version(version)
        registered = self.registered(required=version)
        if version == self.default_version() and not (last and registered == [version]):
            raise DefaultVersion(version)
        self.catalog.retire(version, actor)
        waited = self._wait(lambda fleet: [r.replica_id for r in fleet.live
                                           if version in r.ready])
        return self._answer(waited, f"unregister {version}")

    def rollback(self, actor: Actor, to: str | None = None) -> tuple[dict, int]:
        """Return to the previous default by the model's history (again, to the one
        before it), as `kubectl rollout undo` does; or to the version `to` names."""
        current = self.default_version()
        name_one = ("name the version: modelctl rollback --to VERSION, or POST "
                    f'/models/{self.name}/rollback {{"version": "..."}}')
        if to is not None:
            if check_version(to) == current:
                raise ApiError(409, f"version {to} is already the default")
            return self.promote(to, actor, "rollback", f"from {current} to the version named")
        defaults = ModelHistory(self.catalog.engine).defaults(self.name)
        if not defaults or defaults[-1] != current:
            raise ApiError(409, f"the model history does not say how {current} became the "
                                f"default (it was declared before the history began): "
                                f"{name_one}")
        declared = set(self.registered())
        earlier = [v for v in defaults[:-1] if v in declared and v != current]
        if not earlier:
            raise ApiError(409, f"no earlier default of model {self.name} is still "
                                f"registered: {name_one}")
        return self.promote(earlier[-1], actor, "rollback",
                            f"from {current} to the previous default")
