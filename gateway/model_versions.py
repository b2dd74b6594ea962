"""Model versions on TorchServe's management API: which are registered, which is ready,
register, promote, unregister, roll back.

Shared by the admin routes, the prediction pipeline, readiness and the operator CLI
(python -m gateway.modelctl).
"""

import re

from gateway.errors import ApiError, unavailable
from gateway.readiness import default_version_ready, ready_workers
from gateway.torchserve_client import TorchServeClient

# A plain archive file name in the model store: no URL, no path, no "..".
ARCHIVE_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*\.mar$")
VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,31}$")
REGISTER_TIMEOUT = 180  # s: TorchServe answers a synchronous register once workers are up


def check_version(version: str) -> str:
    """A version as it may appear in a URL path: 1-32 letters, digits, '.', '_', '-'."""
    if not VERSION_PATTERN.match(version) or ".." in version:
        raise ApiError(422, "model version must be 1-32 letters, digits, '.', '_' or '-'")
    return version


def version_key(version: str) -> tuple:
    """1.10 sorts after 1.9: numeric parts compare as numbers."""
    return tuple((0, int(p), "") if p.isascii() and p.isdigit() else (1, 0, p)
                 for p in re.split(r"[.-]", version))


def _raise_for(status: int, body: dict, context: str):
    message = body.get("message") if isinstance(body, dict) else None
    if status == 404:
        raise ApiError(404, message or f"{context}: not found")
    if status == 409:
        raise ApiError(409, message or f"{context}: conflict")
    raise ApiError(502, f"{context}: management API answered {status}: {message}")


class ModelVersions:
    def __init__(self, torchserve: TorchServeClient):
        self.ts = torchserve
        self.name = torchserve.model_name

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise ApiError(404, f"model {name} is not served here (this gateway serves {self.name})")

    def default_version(self) -> str:
        return self.ts.describe()[0]["modelVersion"]

    def registered(self, required: str | None = None) -> list[str]:
        """The registered versions; ApiError 404 when `required` is not one of them."""
        versions = [v["modelVersion"] for v in self.ts.describe("all")]
        if required is not None and required not in versions:
            raise ApiError(404, f"model {self.name} version {required} is not registered")
        return versions

    def ready(self, version: str | None = None) -> dict:
        """The version (default: the default one) with its READY worker count, or
        ApiError 503 with the reason it is not ready."""
        try:
            described = self.ts.describe(version or "")
        except ApiError as exc:
            if version is not None and exc.status == 404:
                raise
            raise unavailable(f"not ready: {exc.detail}") from None
        ready, reason = default_version_ready(described, self.name)
        if not ready:
            raise unavailable(f"not ready: {reason}")
        return {"model_name": self.name, "model_version": described[0].get("modelVersion"),
                "ready_workers": len(ready_workers(described[0]))}

    def overview(self) -> dict:
        """Every version with workers, default flag and recorded weights."""
        default = self.default_version()
        versions = []
        for entry in sorted(self.ts.describe("all"), key=lambda v: version_key(v["modelVersion"])):
            version = entry["modelVersion"]
            status, body = self.ts.management(
                "GET", f"/models/{self.name}/{version}", params={"customized": "true"})
            custom = body[0].get("customizedMetadata") if status == 200 and body else None
            workers = [{"id": w.get("id"), "status": w.get("status"), "pid": w.get("pid")}
                       for w in entry.get("workers", [])]
            versions.append({
                "version": version,
                "default": version == default,
                "archive": entry.get("modelUrl"),
                "workers": workers,
                "ready_workers": len(ready_workers(entry)),
                "weights": custom.get("weights") if isinstance(custom, dict) else None,
            })
        return {"model_name": self.name, "default_version": default, "versions": versions}

    def register(self, archive) -> dict:
        if not isinstance(archive, str) or not ARCHIVE_PATTERN.match(archive):
            raise ApiError(422, "archive must be the plain file name of a .mar in the model "
                                "store (no URL, no path, no '..')")
        status, body = self.ts.management(
            "POST", "/models", timeout=REGISTER_TIMEOUT,
            params={"url": archive, "initial_workers": 1, "synchronous": "true"})
        if status == 404:
            raise ApiError(404, f"archive {archive} is not in the model store")
        if status != 200:
            _raise_for(status, body, f"register {archive}")
        return {"status": body.get("status"), **self.overview()}

    def promote(self, version: str) -> dict:
        check_version(version)
        status, body = self.ts.management("PUT", f"/models/{self.name}/{version}/set-default")
        if status != 200:
            _raise_for(status, body, f"promote {version}")
        return {"model_name": self.name, "default_version": version}

    def unregister(self, version: str) -> dict:
        check_version(version)
        if version == self.default_version():
            raise ApiError(409, f"version {version} is the default: promote another one first")
        status, body = self.ts.management("DELETE", f"/models/{self.name}/{version}", timeout=60)
        if status != 200:
            _raise_for(status, body, f"unregister {version}")
        return {"model_name": self.name, "unregistered": version}

    def rollback(self) -> dict:
        """Make the newest registered version older than the default the default."""
        current = self.default_version()
        older = [v for v in self.registered() if version_key(v) < version_key(current)]
        if not older:
            raise ApiError(409, f"no registered version older than the default {current}")
        return self.promote(max(older, key=version_key))
