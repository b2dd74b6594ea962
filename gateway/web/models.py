"""Admin routes for model versions (role admin): the declared versions and archives
through ModelVersions, canary and shadow rollouts (`/models/{name}/rollout`) through
RolloutControl, and each model's history of changes (core.model_history).

`/models/{name}/canary` is the rollout resource's older name, kept as an alias."""

import base64
import binascii

from flask import Blueprint, request
from werkzeug.exceptions import RequestEntityTooLarge

from core import model_history
from core.errors import ApiError
from core.model_history import Actor
from core.signatures import MAX_SIGNATURE_BYTES
from gateway.models.rollouts.control import RolloutControl
from gateway.models.versions import ModelVersions, archive_too_large
from gateway.web.auth import actor, authenticate
from gateway.web.extension import services
from gateway.web.query import MAX_LIMIT, export, int_arg

bp = Blueprint("model_versions", __name__, url_prefix="/models")


@bp.after_request
def reread_control_state(response):
    """A change reaches this process's predictions at once (the others' within their
    snapshot's refresh); a refused call may have changed the state too (a register that
    no replica can load stays declared)."""
    if request.method != "GET":
        services().snapshot.refresh()
    return response


def _admin(name: str, known: bool = True) -> tuple[ModelVersions, Actor]:
    """The model's versions (404 for one not declared, unless a first version is being
    registered) and the admin making the change."""
    user = authenticate("models:admin", name)
    return services().models.versions(name, known), actor(user)


def _versions(name: str) -> ModelVersions:
    return _admin(name)[0]


def _rollouts(name: str) -> tuple[RolloutControl, Actor]:
    versions, admin = _admin(name)
    if (store := services().rollouts(name)) is None:
        raise ApiError(409, "canary and shadow rollouts live in the prediction log: "
                            "they need PREDICTION_LOG=true")
    return RolloutControl(store, versions), admin


@bp.get("/<name>")
def overview(name):
    versions = _versions(name)
    store = services().rollouts(name)
    rollout = RolloutControl(store, versions).status() if store else {"rollout": None}
    return {**versions.overview(), **rollout}


def _signature() -> str | None:
    """The Model-Signature header: the base64 of the archive's signature file."""
    raw = request.headers.get("Model-Signature")
    if raw is None:
        return None
    try:
        signature = base64.b64decode(raw, validate=True)
    except binascii.Error:
        raise ApiError(422, "Model-Signature must be the base64 of the archive's signature "
                            "file (NAME.mar.sig)") from None
    if len(signature) > MAX_SIGNATURE_BYTES:
        raise ApiError(422, f"Model-Signature is over {MAX_SIGNATURE_BYTES} bytes")
    return signature.decode(errors="replace")


@bp.post("/<name>/archives")
def push(name):
    """The request body is the archive; ?filename= names it (<model>-<version>.mar, or
    ?version= says the version it holds); the Model-Signature header carries its
    signature. Streamed, never a URL."""
    versions, admin = _admin(name, known=False)
    filename = request.args.get("filename")
    if filename is None:
        raise ApiError(422, "name the archive: POST /models/{name}/archives?filename=NAME.mar")
    maximum = services().settings.max_archive_bytes
    if (request.content_length or 0) > maximum:
        raise archive_too_large(maximum)
    request.max_content_length = maximum  # this route's bound, not the image upload's
    try:
        return versions.push(request.stream, filename, admin, maximum,
                             request.args.get("version"), _signature()), 201
    except RequestEntityTooLarge:
        raise archive_too_large(maximum) from None


@bp.post("/<name>/versions")
def register(name):
    versions, admin = _admin(name, known=False)
    body = request.get_json(silent=True)
    if not isinstance(body, dict) or "archive" not in body:
        raise ApiError(422, 'send JSON {"archive": "<.mar file name: model store or pushed>"}')
    answer, status = versions.register(body["archive"], admin)
    return answer, 201 if status == 200 else status


@bp.put("/<name>/versions/<version>/default")
def promote(name, version):
    versions, admin = _admin(name)
    return versions.promote(version, admin)


@bp.post("/<name>/rollback")
def rollback(name):
    """To the previous default by the model's history, or to {"version": ...}."""
    versions, admin = _admin(name)
    body = request.get_json(silent=True) if request.content_length else {}
    if not isinstance(body, dict) or set(body) - {"version"} \
            or not isinstance(body.get("version", ""), str):
        raise ApiError(422, 'send no body (the previous default), or JSON {"version": "1.0"}')
    return versions.rollback(admin, body.get("version"))


@bp.get("/<name>/history")
def history(name):
    """The model's changes, newest first, a page at a time (?limit=, ?before=<id>); a
    model whose last version went keeps its history."""
    _admin(name, known=False)
    limit = int_arg("limit", 20, 1, MAX_LIMIT)
    records = services().history.page(name, limit, int_arg("before", None, 1, 2**63 - 1))
    return {"items": [r.shown() for r in records],
            "next_before": records[-1].id if len(records) == limit else None}


@bp.get("/<name>/history/export")
def export_history(name):
    """The model's whole history, oldest first, in the prediction log's export formats
    (?format=ndjson|csv, ?after=<id> to resume)."""
    _admin(name, known=False)
    records = services().history.records(name, int_arg("after", 0, 0, 2**63 - 1))
    return export((r.shown() for r in records), model_history.COLUMNS)


@bp.delete("/<name>/versions/<version>")
def unregister(name, version):
    versions, admin = _admin(name)
    store = services().rollouts(name)
    active = store.active() if store else None
    if active is not None and active.version == version:
        raise ApiError(409, f"version {version} is the candidate of an active {active.mode}: "
                            "promote or end it first")
    return versions.unregister(version, admin)


@bp.put("/<name>/rollout")
@bp.put("/<name>/canary")
def start_rollout(name):
    control, admin = _rollouts(name)
    return control.start(request.get_json(silent=True), admin)


@bp.post("/<name>/rollout/promote")
@bp.post("/<name>/canary/promote")
def promote_rollout(name):
    control, admin = _rollouts(name)
    return control.promote(admin)


@bp.delete("/<name>/rollout")
@bp.delete("/<name>/canary")
def end_rollout(name):
    control, admin = _rollouts(name)
    return control.abort(admin)
