"""TorchServe's management API, as TorchServe documents it, over the declared state.

Each call changes the catalog (core.catalog) through ModelVersions, so every replica's
agent follows it and a restart keeps it; the answers take TorchServe's shapes: a
`{"status": ...}` message, the model descriptions of `GET /models/{name}`, the paged
`{"models": [...], "nextPageToken": ...}` list. TorchServe's errors
(`{"code", "type", "message"}`) are rendered by the adapter (gateway.web.torchserve).

What differs from TorchServe, on purpose: `url` names an archive in MODEL_STORE or one
pushed to the gateway, never an http(s) URL (ShellTorch, CVE-2023-43654);
`initial_workers` defaults to 1, not 0; a synchronous call waits for every live replica
(VERSION_WAIT_SECONDS), not one TorchServe; workers in a description are the replicas'
READY ones.
"""

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from core.catalog import Workers
from core.errors import ApiError
from core.model_history import Actor
from gateway.models.versions import DefaultVersion, Models, ModelVersions, version_key

MAX_LIST = 1000  # TorchServe's limit has no bound; ours does
REGISTER_FIELDS = ("url", "model_name", "initial_workers", "batch_size", "max_batch_delay",
                   "response_timeout", "synchronous")
# TorchServe's exception names, by status (its clients read `type` less than `code`).
ERROR_TYPES = {400: "BadRequestException", 401: "Unauthorized", 403: "Forbidden",
               404: "ModelNotFoundException", 405: "MethodNotAllowedException",
               409: "ConflictStatusException", 413: "RequestEntityTooLarge",
               429: "TooManyRequests", 503: "ServiceUnavailableException",
               504: "RequestTimeout"}


def error_body(exc: ApiError) -> tuple[dict, int]:
    """TorchServe's error shape. TorchServe answers 400 where we would say 422."""
    status = 400 if exc.status == 422 else exc.status
    return {"code": status, "type": ERROR_TYPES.get(status, "InternalServerException"),
            "message": exc.detail}, status


def _integer(params: Mapping, name: str, low: int, high: int) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise ApiError(400, f"{name} must be an integer") from None
    if isinstance(raw, bool) or not low <= value <= high:
        raise ApiError(400, f"{name} must be from {low} to {high}")
    return value


def _synchronous(params: Mapping) -> bool:
    raw = params.get("synchronous", True)
    if isinstance(raw, bool):
        return raw
    if str(raw).lower() in ("true", "false"):
        return str(raw).lower() == "true"
    raise ApiError(400, "synchronous must be true or false")


@dataclass(frozen=True)
class Registration:
    archive: str
    model_name: str | None
    workers: Workers
    synchronous: bool

    @classmethod
    def parse(cls, params: Mapping) -> "Registration":
        """From the query string or the JSON body (TorchServe takes either)."""
        unknown = set(params) - set(REGISTER_FIELDS)
        if unknown:
            raise ApiError(400, f"unknown parameter(s): {', '.join(sorted(unknown))}")
        url = params.get("url")
        if not isinstance(url, str) or not url:
            raise ApiError(400, "Parameter url is required.")
        if "://" in url:
            raise ApiError(400, "loading a model from a URL is disabled: push the archive "
                                "(POST /models/{name}/archives) and register it by file name")
        name = params.get("model_name")
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "model_name must be a string")
        initial = _integer(params, "initial_workers", 1, 1 << 16)
        workers = Workers(initial, initial, _integer(params, "batch_size", 1, 1024),
                          _integer(params, "max_batch_delay", 0, 600_000),
                          _integer(params, "response_timeout", 1, 3600))
        return cls(url, name or None, workers, _synchronous(params))


class TorchServeManagement:
    """TorchServe's management calls for one caller: `may(model)` says which models it
    manages (the others are hidden from its list and refused, 403)."""

    def __init__(self, models: Models, may: Callable[[str], bool], actor: Actor):
        self.models, self.may, self.actor = models, may, actor

    def _versions(self, name: str) -> ModelVersions:
        self._require(name)
        return self.models.versions(name)

    def _require(self, name: str) -> None:
        if not self.may(name):
            raise ApiError(403, f"this needs the 'models:admin' scope for model {name}",
                           error="insufficient_scope")

    # ---- reads ---------------------------------------------------------------------
    def list_models(self, limit: str | None, token: str | None) -> dict:
        size = _integer({"limit": limit}, "limit", 1, MAX_LIST) or 100
        start = _integer({"next_page_token": token}, "next_page_token", 0, 1 << 31) or 0
        names = [n for n in self.models.names() if self.may(n)]
        listed = []
        for name in names[start:start + size]:
            versions = self.models.versions(name, known=False)
            default = next((d for d in versions.catalog.declared() if d.is_default), None)
            listed.append({"modelName": name,
                           "modelUrl": default.archive.name if default else None})
        answer = {"models": listed}
        if start + size < len(names):
            answer["nextPageToken"] = str(start + size)
        return answer

    def describe(self, name: str, which: str | None = None) -> list[dict]:
        """The default version (`which` None), one version, or "all", as TorchServe
        describes them; workers are the live replicas' READY ones."""
        versions = self._versions(name)
        declared = sorted(versions.catalog.declared(), key=lambda d: version_key(d.version))
        if which is None:
            declared = [d for d in declared if d.is_default]
        elif which != "all":
            declared = [d for d in declared if d.version == which]
            if not declared:
                raise ApiError(404, f"Model version: {which} does not exist for model: {name}")
        fleet = versions.fleet()
        described = []
        for d in declared:
            workers = d.workers
            ready = [(r.replica_id, i) for r in fleet.live
                     for i in range(r.ready.get(d.version, 0))]
            described.append({
                "modelName": name, "modelVersion": d.version, "modelUrl": d.archive.name,
                "runtime": "python", "minWorkers": workers.min_workers or 1,
                "maxWorkers": workers.max_workers or workers.min_workers or 1,
                "batchSize": workers.batch_size or 1,
                "maxBatchDelay": workers.max_batch_delay or 100,
                "responseTimeout": workers.response_timeout or 120,
                "loadedAtStartup": False, "isDefault": d.is_default,
                "workers": [{"id": f"{replica}-{i}", "status": "READY", "gpu": False}
                            for replica, i in ready],
                "replicas": [r.replica_id for r in fleet.live if r.serves(d.version)],
                "sha256": d.archive.sha256, "registeredBy": d.registered_by,
            })
        return described

    # ---- changes -------------------------------------------------------------------
    def register(self, registration: Registration) -> tuple[dict, int]:
        name = self.models.archive_model(registration.archive)
        if registration.model_name not in (None, name):
            raise ApiError(400, f"archive {registration.archive} is model {name}, not "
                                f"{registration.model_name}")
        self._require(name)
        versions = self.models.versions(name, known=False)
        body, status = versions.register(registration.archive, self.actor, registration.workers,
                                         wait=registration.synchronous)
        version = next((v["version"] for v in body["versions"]
                        if v["archive"] == registration.archive), None)
        workers = registration.workers.min_workers or 1
        return self._status(body, status, registration.synchronous,
                            f'Model "{name}" Version: {version} registered with {workers} '
                            "initial workers")

    def set_default(self, name: str, version: str) -> tuple[dict, int]:
        body, status = self._versions(name).promote(version, self.actor)
        return self._status(body, status, True, f'Default version successfully updated for '
                                                 f'model "{name}" to "{version}"')

    def unregister(self, name: str, version: str | None) -> tuple[dict, int]:
        versions = self._versions(name)
        version = version or versions.default_version()
        try:  # TorchServe lets a model's last version go; MODEL_NAME's serves /predict
            body, status = versions.unregister(version, self.actor,
                                               last=name != self.models.default)
        except DefaultVersion:
            raise ApiError(403, f"Cannot remove default version {version} for model {name}"
                           ) from None
        return self._status(body, status, True,
                            f'Model "{name}" version: {version} unregistered')

    def scale(self, name: str, version: str | None, params: Mapping) -> tuple[dict, int]:
        versions = self._versions(name)
        version = version or versions.default_version()
        low = _integer(params, "min_worker", 1, 1 << 16) or 1
        high = _integer(params, "max_worker", 1, 1 << 16) or low
        synchronous = _synchronous(params)
        body, status = versions.scale(version, low, high, self.actor, wait=synchronous)
        return self._status(body, status, synchronous, "Workers updated")

    @staticmethod
    def _status(body: dict, status: int, synchronous: bool, done: str) -> tuple[dict, int]:
        """TorchServe's {"status": ...}: 200 done on every live replica; 202 accepted
        (asynchronous, or not yet everywhere when the wait ended)."""
        if status == 422:
            raise ApiError(400, body["status"])
        if status == 200:
            return {"status": done}, 200
        if not synchronous:
            return {"status": f"{done}; processing worker updates on the replicas"}, 202
        return {"status": f"{done}; {body['status']}"}, 202
