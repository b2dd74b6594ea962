"""The model agent beside each TorchServe: it makes its TorchServe serve the declared
state (core.catalog) of every model and reports what it serves.

Every AGENT_INTERVAL_SECONDS, for each model declared (or still served here): fetch
each declared archive it lacks from the database
into AGENT_STORE (TorchServe's model store), checked against its sha256 before
TorchServe sees it; register it on the management API on loopback, by file name, with
the workers and batching declared for it (and scale it when they change); set the
declared default once it has a READY worker; unregister what is no longer declared;
report the replica's state into the database (per model) and into AGENT_STATE_FILE,
which the replica's readiness check reads (agent.probe --agent-state): the replica is
ready when it serves MODEL_NAME's declared state.

A version other than the default that cannot load (TorchServe refuses its archive, or
its worker exits before it was ever READY here) is unregistered again, reported as the
replica's error and not tried again until it is retired or declared with another
archive: the replica stays ready while it serves the declared default and what an
active rollout routes to it. The default is never given up: it is what the replica
serves, so it is tried again each round and its errors reported. With the
database down it keeps serving the last declared state it read.

On a database where nothing was ever declared for MODEL_NAME it adopts what its
TorchServe serves of it, or else MODEL_SEED from MODEL_STORE, so an upgraded deployment
keeps its versions.
The agent never migrates the schema: until the gateway has, it reports not ready.
"""

import json
import logging
import os
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from agent.readiness import ready_workers
from core.catalog import Archive, Catalog, DeclaredVersion, declared_models, sha256_of
from core.errors import ApiError
from core.model_history import Actor
from core.settings import Settings
from core.signatures import ArchiveSignatures, signature_beside
from core.torchserve_client import TorchServeClient

log = logging.getLogger("model_agent")
FORGET_REPLICAS_AFTER = timedelta(hours=1)


def store_file_name(archive: Archive) -> str:
    """Content-addressed: two archives never share a file, a changed one never reuses one."""
    return f"{archive.name.removesuffix('.mar')}.{archive.sha256[:16]}.mar"


class ModelAgent:
    """The replica's agent: one ModelReconciler per model."""

    def __init__(self, settings: Settings, engine: Engine, torchserve: TorchServeClient):
        self.settings, self.engine, self.ts = settings, engine, torchserve
        self.primary = settings.model_name
        self.state_file = Path(settings.agent_state_file)
        self.replica_id = settings.replica_id or socket.gethostname()
        self.converged = self.ready = False
        self.signatures = ArchiveSignatures.from_settings(settings)
        self.models: dict[str, ModelReconciler] = {}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)

    def reconciler(self, name: str) -> "ModelReconciler":
        if name not in self.models:
            self.models[name] = ModelReconciler(self.settings, Catalog(self.engine, name),
                                                self.ts, self.replica_id, self.signatures)
        return self.models[name]

    def step(self) -> tuple[bool, str]:
        """One reconciliation of every model; (converged, what is not)."""
        declared = set(declared_models(self.engine))
        names = {self.primary, *declared, *self.models, *self.ts.models()}
        pending, ready = [], False
        for name in sorted(names):
            model = self.reconciler(name)
            try:
                converged, why = model.step(adopt=name == self.primary)
            except ApiError as exc:  # another model's trouble is its own
                if name == self.primary:
                    raise
                converged, why = False, exc.detail
            if name == self.primary:
                ready = model.ready
            if not converged:
                pending.append(f"{name}: {why}")
            elif name not in declared and name != self.primary:
                del self.models[name]  # unserved: forgotten
        self.ready = ready
        Catalog(self.engine, self.primary).forget_replicas(FORGET_REPLICAS_AFTER)
        return not pending, "; ".join(pending)

    def write_state(self, reason: str) -> None:
        partial = self.state_file.with_name(f".{self.state_file.name}.partial")
        partial.write_text(json.dumps({"replica_id": self.replica_id, "ready": self.ready,
                                       "converged": self.converged, "reason": reason,
                                       "at": time.time()}))
        os.replace(partial, self.state_file)

    def run(self, interval: float, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.converged, reason = self.step()
            except SQLAlchemyError as exc:
                # Keep serving what was declared; readiness keeps its last answer.
                reason = f"database unreachable or not migrated: {type(exc).__name__}"
                log.warning("%s", reason)
            except ApiError as exc:
                self.converged = self.ready = False
                reason = exc.detail
                log.warning("%s", reason)
            self.write_state(reason or "serves the declared state")
            stop.wait(interval)


class ModelReconciler:
    """Makes this replica's TorchServe serve one model's declared versions."""

    def __init__(self, settings: Settings, catalog: Catalog, torchserve: TorchServeClient,
                 replica_id: str, signatures: ArchiveSignatures):
        self.catalog, self.ts, self.replica_id = catalog, torchserve, replica_id
        self.signatures = signatures
        self.name = catalog.model_name
        self.store = Path(settings.agent_store)
        self.seed_store = Path(settings.model_store)
        self.seeds = [s for s in settings.model_seed.split(",") if s.strip()]
        self.ready = False
        self.failed: dict[str, tuple[str, str]] = {}  # version -> (archive sha256, why)
        self._loaded: set[str] = set()  # served archive files that were READY here once
        self._pids_before_ready: dict[str, set[int]] = {}  # served file -> workers' pids
        self.served_sha256: dict[str, str] = {}  # file TorchServe loaded -> its sha256
        self._seeds_hashed: set[str] | None = None
        self.store.mkdir(parents=True, exist_ok=True)

    # ---- TorchServe on loopback ---------------------------------------------------------
    def _served(self) -> dict[str, dict]:
        """Every registered version's description, by version ({} when none)."""
        try:
            return {d["modelVersion"]: d for d in self.ts.describe("all", self.name)}
        except ApiError as exc:
            if exc.status == 404:
                return {}
            raise

    def _default(self) -> str | None:
        try:
            return self.ts.describe("", self.name)[0]["modelVersion"]
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _call(self, method: str, path: str, what: str, **params) -> None:
        status, body = self.ts.management(method, path, timeout=60, params=params or None)
        if status not in (200, 202):
            message = body.get("message") if isinstance(body, dict) else body
            raise ApiError(502, f"{what}: management API answered {status}: {message}")

    def _load(self, declared: DeclaredVersion) -> None:
        """Fetch (unless a verified copy is there), check its signature against this
        agent's trusted keys, and register, without waiting for the workers: the next
        rounds report them as they come up."""
        archive = declared.archive
        path = self.store / store_file_name(archive)
        if not path.is_file() or sha256_of(path) != archive.sha256:
            self.catalog.fetch_archive(archive, path)
            log.info("fetched %s (%d bytes, sha256 %s)", archive.name, archive.size_bytes,
                     archive.sha256)
        if archive.signature is None and archive.sha256 in self._seed_sha256s():
            trusted = "unsigned, byte for byte a seed of this replica's image"
        else:
            try:
                trusted = self.signatures.check(path, archive.signature)
            except ApiError:
                path.unlink()  # TorchServe is never pointed at it
                raise
        log.info("%s: %s", archive.name, trusted)
        self._call("POST", "/models", f"register {archive.version}", url=path.name,
                   synchronous="false", **declared.workers.register_params())
        log.info("registering %s %s from %s", self.name, archive.version, path.name)

    def _seed_sha256s(self) -> set[str]:
        """The seeds' sha256s (hashed once): an archive identical to one shipped in this
        replica's own image is as trusted as the image's code, signed or not."""
        if self._seeds_hashed is None:
            self._seeds_hashed = {sha256_of(self.seed_store / seed) for seed in self.seeds
                                  if (self.seed_store / seed).is_file()}
        return self._seeds_hashed

    # ---- one round --------------------------------------------------------------------
    def adopt(self) -> None:
        """Declare what TorchServe serves now, or the seeds, on a database that never had
        a declared version."""
        served, default = self._served(), self._default()
        if served:
            paths = [self._served_file(d["modelUrl"]) for d in served.values()]
        else:
            paths = [self.seed_store / seed for seed in self.seeds]
            paths = [p for p in paths if p.is_file()]
        if not paths:
            raise ApiError(409, f"nothing is declared and nothing to adopt (MODEL_SEED "
                                f"{','.join(self.seeds)} in {self.seed_store})")
        actor = Actor(f"agent {self.replica_id}")
        archives = [self.catalog.store_archive(p, p.name, actor, signature=signature_beside(p))
                    for p in paths]
        default = default or archives[0].version
        if self.catalog.adopt(archives, default, actor):
            log.info("adopted %s, default %s", [a.version for a in archives], default)

    def _served_file(self, model_url: str) -> Path:
        for directory in (self.store, self.seed_store):
            if (directory / model_url).is_file():
                return directory / model_url
        raise ApiError(409, f"served archive {model_url} is in neither store")

    def _served_sha256(self, described: dict) -> str | None:
        """The sha256 of the archive a served version was loaded from (hashed once)."""
        model_url = described.get("modelUrl", "")
        if model_url not in self.served_sha256:
            try:
                self.served_sha256[model_url] = sha256_of(self._served_file(model_url))
            except ApiError:
                return None
        return self.served_sha256[model_url]

    def _scale(self, declared: DeclaredVersion, described: dict) -> None:
        """Apply the declared worker bounds to a served version that differs."""
        workers = declared.workers
        if workers.min_workers is None:
            return
        wanted = (workers.min_workers, workers.max_workers or workers.min_workers)
        if (described.get("minWorkers"), described.get("maxWorkers")) != wanted:
            self._call("PUT", f"/models/{self.name}/{declared.version}",
                       f"scale {declared.version}", min_worker=wanted[0], max_worker=wanted[1],
                       synchronous="false")
            log.info("scaling %s %s to %d-%d workers", self.name, declared.version, *wanted)

    def _unserve(self, served: dict) -> None:
        """Unregister every version of a model nothing declares any more (its default last)."""
        default = self._default()
        for version in sorted(served, key=lambda v: v == default):
            self._unregister(version, served)

    def step(self, adopt: bool = False) -> tuple[bool, str]:
        """One reconciliation; (converged, what is not). `adopt`: on a database that never
        declared this model, declare what TorchServe serves of it, or the seeds."""
        declared = self.catalog.declared()
        if not declared and adopt and not self.catalog.ever_declared():
            self.adopt()
            declared = self.catalog.declared()
        if not declared and not adopt:
            if served := self._served():
                self._unserve(served)
                self.catalog.report(self.replica_id, None, {}, {}, True)
            return True, ""
        wanted = {d.version: d for d in declared}
        target = next((d.version for d in declared if d.is_default), None)
        # A failure holds while its version is declared with the same archive.
        self.failed = {v: f for v, f in self.failed.items()
                       if v in wanted and wanted[v].archive.sha256 == f[0]}
        served, errors = self._served(), {}
        for version, d in wanted.items():
            if version in self.failed or (
                    version in served
                    and self._served_sha256(served[version]) == d.archive.sha256):
                continue
            try:
                if version in served:  # declared again with another archive
                    self._unregister(version, served)
                self._load(d)
            except ApiError as exc:
                if version == target:  # never given up: tried again each round
                    errors[version] = exc.detail
                    log.error("version %s: %s", version, exc.detail)
                else:
                    self._fail(d, exc.detail, served)
        served = self._served()
        for version in set(served) & set(wanted) - set(self.failed) - {target}:
            if why := self._crashed(served[version]):
                self._fail(wanted[version], why, served)
        served = self._served()
        for version in set(served) & set(wanted) - set(self.failed):
            self._scale(wanted[version], served[version])
        self._forget_unserved(served)
        ready = {v: len(ready_workers(d)) for v, d in served.items()}
        default = self._default()
        if target and default != target and ready.get(target):
            self._call("PUT", f"/models/{self.name}/{target}/set-default", f"promote {target}")
            log.info("default %s -> %s", default, target)
            default = target
        for version in set(served) - set(wanted):
            if version != default:
                self._unregister(version, served)
                ready.pop(version, None)
        errors.update((v, why) for v, (_, why) in self.failed.items())
        pending = self._pending(declared, ready, default, errors)
        routed = {v for v in self.catalog.routed_versions() if v not in self.failed}
        self.ready = bool(target and default == target and ready.get(target)) and all(
            ready.get(v) for v in routed)
        self.catalog.report(self.replica_id, default, ready, errors, not pending)
        return not pending, pending

    def _crashed(self, described: dict) -> str | None:
        """Why a registered version is failing to load: its worker was started again
        before it was ever READY (TorchServe restarts a worker that exits, with backoff).
        Never for an archive that was READY here once: a worker that dies later is
        TorchServe's to restart, and the alerts' to report."""
        served_file = described.get("modelUrl", "")
        if served_file in self._loaded:
            return None
        if ready_workers(described):
            self._loaded.add(served_file)
            self._pids_before_ready.pop(served_file, None)
            return None
        seen = self._pids_before_ready.setdefault(served_file, set())
        seen.update(w["pid"] for w in described.get("workers", []) if w.get("pid", -1) > 0)
        if len(seen) < 2:
            return None
        return (f"its worker exited {len(seen) - 1} time(s) before it was READY "
                "(TorchServe's model log says why)")

    def _fail(self, declared: DeclaredVersion, why: str, served: dict) -> None:
        """Stop trying a version that cannot load (unregistered, so TorchServe stops
        restarting its worker), and say why."""
        version = declared.version
        log.error("version %s cannot load: %s", version, why)
        self.failed[version] = (declared.archive.sha256, f"failed to load: {why}")
        if version in served:
            try:
                self._unregister(version, served)
            except ApiError as exc:
                log.error("version %s: %s", version, exc.detail)

    def _forget_unserved(self, served: dict) -> None:
        """What TorchServe no longer serves (unregistered, or TorchServe restarted) is
        watched afresh if it comes back."""
        files = {d.get("modelUrl", "") for d in served.values()}
        self._loaded &= files
        self._pids_before_ready = {f: p for f, p in self._pids_before_ready.items()
                                   if f in files}

    def _unregister(self, version: str, served: dict) -> None:
        self._call("DELETE", f"/models/{self.name}/{version}", f"unregister {version}")
        log.info("unregistered %s %s (%s)", self.name, version, served[version].get("modelUrl"))

    @staticmethod
    def _pending(declared: list[DeclaredVersion], ready: dict, default: str | None,
                 errors: dict) -> str:
        """What keeps the replica from serving the declared state; "" when nothing does."""
        if not declared:
            return "nothing is declared"
        failed = [d.version for d in declared if d.version in errors]
        loading = [d.version for d in declared
                   if not ready.get(d.version) and d.version not in errors]
        target = next((d.version for d in declared if d.is_default), None)
        if failed:
            return f"cannot load {', '.join(failed)}"
        if loading:
            return f"loading {', '.join(loading)}"
        if target != default:
            return f"default is {default}, declared {target}"
        return ""
