"""Admin routes for model versions (role admin): versions through ModelVersions, canary
and shadow rollouts (`/models/{name}/rollout`) through RolloutControl.

`/models/{name}/canary` is the rollout resource's older name, kept as an alias."""

from flask import Blueprint, request

from gateway.auth import authenticate
from gateway.errors import ApiError
from gateway.model_versions import ModelVersions
from gateway.rollouts.control import RolloutControl
from gateway.services import services

bp = Blueprint("model_versions", __name__, url_prefix="/models")


def _versions(name: str) -> ModelVersions:
    authenticate("admin")
    versions = ModelVersions(services().torchserve)
    versions.check_name(name)
    return versions


def _rollouts(name: str) -> RolloutControl:
    versions = _versions(name)
    if services().rollouts is None:
        raise ApiError(409, "canary and shadow rollouts live in the prediction log: "
                            "they need PREDICTION_LOG=true")
    return RolloutControl(services().rollouts, versions)


@bp.get("/<name>")
def overview(name):
    versions = _versions(name)
    rollout = (RolloutControl(services().rollouts, versions).status()
               if services().rollouts else {"rollout": None})
    return {**versions.overview(), **rollout}


@bp.post("/<name>/versions")
def register(name):
    versions = _versions(name)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "archive" not in body:
        raise ApiError(422, 'send JSON {"archive": "<file name in the model store>"}')
    return versions.register(body["archive"]), 201


@bp.put("/<name>/versions/<version>/default")
def promote(name, version):
    return _versions(name).promote(version)


@bp.delete("/<name>/versions/<version>")
def unregister(name, version):
    versions = _versions(name)
    active = services().rollouts.active() if services().rollouts else None
    if active is not None and active.version == version:
        raise ApiError(409, f"version {version} is the candidate of an active {active.mode}: "
                            "promote or end it first")
    return versions.unregister(version)


@bp.put("/<name>/rollout")
@bp.put("/<name>/canary")
def start_rollout(name):
    return _rollouts(name).start(request.get_json(silent=True))


@bp.post("/<name>/rollout/promote")
@bp.post("/<name>/canary/promote")
def promote_rollout(name):
    return _rollouts(name).promote()


@bp.delete("/<name>/rollout")
@bp.delete("/<name>/canary")
def end_rollout(name):
    return _rollouts(name).abort()
