"""Admin routes for model versions (role admin): thin, validated calls to ModelVersions."""

from flask import Blueprint, request

from gateway.auth import authenticate
from gateway.errors import ApiError
from gateway.model_versions import ModelVersions
from gateway.services import services

bp = Blueprint("model_versions", __name__, url_prefix="/models")


def _versions(name: str) -> ModelVersions:
    authenticate("admin")
    versions = ModelVersions(services().torchserve)
    versions.check_name(name)
    return versions


@bp.get("/<name>")
def overview(name):
    return _versions(name).overview()


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
    return _versions(name).unregister(version)
