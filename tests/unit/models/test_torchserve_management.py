"""TorchServe's management API over the declared state, without a server: parsing as
TorchServe documents it, paging, per-model access and TorchServe's status codes
(gateway/models/torchserve_api.py) on a real SQLite catalog."""

import pytest

from core.catalog import Workers
from core.database import schema
from core.database.engine import database_engine
from core.errors import ApiError
from core.model_history import Actor
from core.settings import Settings
from gateway.models.torchserve_api import Registration, TorchServeManagement, error_body
from gateway.models.versions import Models
from tests.support.small_archives import mar


@pytest.fixture
def models(tmp_path):
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    schema.upgrade(url)
    store = tmp_path / "store"
    store.mkdir()
    for model, version in [("classifier", "1.0"), ("classifier", "2.0"),
                           *((f"m{i}", "1.0") for i in range(5))]:
        mar(store / f"{model}-{version}.mar", version, model)
    return Models(Settings(jwt_secret="s" * 40, model_store=str(store),
                           version_wait_seconds=0.05, allow_unsigned_archives=True),
                  database_engine(url))


def management(models, may=lambda name: True) -> TorchServeManagement:
    return TorchServeManagement(models, may, Actor("ops"))


@pytest.mark.parametrize("params, message", [
    ({}, "url is required"),
    ({"url": "https://evil.example/x.mar"}, "from a URL is disabled"),
    ({"url": "file:///etc/x.mar"}, "from a URL is disabled"),
    ({"url": "x.mar", "handler": "evil"}, "unknown parameter"),
    ({"url": "x.mar", "initial_workers": "many"}, "must be an integer"),
    ({"url": "x.mar", "initial_workers": "0"}, "from 1 to"),
    ({"url": "x.mar", "batch_size": True}, "from 1 to"),
    ({"url": "x.mar", "synchronous": "maybe"}, "true or false"),
    ({"url": "x.mar", "model_name": 3}, "must be a string"),
])
def test_a_bad_registration_is_400_saying_why(params, message):
    with pytest.raises(ApiError, match=message) as raised:
        Registration.parse(params)
    assert raised.value.status == 400


def test_query_strings_and_json_bodies_parse_alike():
    query = Registration.parse({"url": "m0-1.0.mar", "initial_workers": "2",
                                "batch_size": "4", "synchronous": "false"})
    body = Registration.parse({"url": "m0-1.0.mar", "initial_workers": 2, "batch_size": 4,
                               "synchronous": False})
    assert query == body
    assert query.workers == Workers(2, 2, 4, None, None) and not query.synchronous
    assert Registration.parse({"url": "m0-1.0.mar"}).synchronous  # TorchServe's default


def test_errors_take_torchserves_shape_and_422_becomes_400():
    assert error_body(ApiError(422, "bad archive")) == (
        {"code": 400, "type": "BadRequestException", "message": "bad archive"}, 400)
    assert error_body(ApiError(404, "no such model"))[0]["type"] == "ModelNotFoundException"
    assert error_body(ApiError(500, "boom"))[0]["type"] == "InternalServerException"


def test_register_list_pages_and_hides_what_the_caller_may_not_manage(models):
    ops = management(models)
    for i in range(5):
        assert ops.register(Registration.parse({"url": f"m{i}-1.0.mar",
                                                "synchronous": "false"}))[1] == 202
    first = ops.list_models("4", None)
    assert [m["modelName"] for m in first["models"]] == ["classifier", "m0", "m1", "m2"]
    rest = ops.list_models("4", first["nextPageToken"])
    assert [m["modelName"] for m in rest["models"]] == ["m3", "m4"]
    assert "nextPageToken" not in rest
    assert rest["models"][0]["modelUrl"] == "m3-1.0.mar"
    team = management(models, may=lambda name: name == "m1")
    assert team.list_models(None, None) == {"models": [{"modelName": "m1",
                                                        "modelUrl": "m1-1.0.mar"}]}
    with pytest.raises(ApiError) as raised:
        team.describe("m2")
    assert raised.value.status == 403 and raised.value.error == "insufficient_scope"
    with pytest.raises(ApiError) as raised:
        team.register(Registration.parse({"url": "classifier-2.0.mar"}))
    assert raised.value.status == 403


@pytest.mark.parametrize("limit, token", [("0", None), ("x", None), (None, "-1")])
def test_bad_paging_is_400(models, limit, token):
    with pytest.raises(ApiError) as raised:
        management(models).list_models(limit, token)
    assert raised.value.status == 400


def test_torchserves_status_codes(models):
    ops = management(models)
    ops.register(Registration.parse({"url": "m0-1.0.mar", "synchronous": "false"}))
    with pytest.raises(ApiError) as raised:  # the same version again
        ops.register(Registration.parse({"url": "m0-1.0.mar", "synchronous": "false"}))
    assert raised.value.status == 409
    with pytest.raises(ApiError) as raised:
        ops.register(Registration.parse({"url": "m0-1.0.mar", "model_name": "m1"}))
    assert raised.value.status == 400
    with pytest.raises(ApiError) as raised:
        ops.describe("nothing-here")
    assert raised.value.status == 404
    with pytest.raises(ApiError) as raised:
        ops.describe("m0", "9.9")
    assert raised.value.status == 404
    described = ops.describe("m0", "all")
    assert [(d["modelVersion"], d["isDefault"]) for d in described] == [("1.0", True)]
    with pytest.raises(ApiError) as raised:  # nothing serves it, so it cannot scale to 2
        ops.scale("m0", None, {"min_worker": "0"})
    assert raised.value.status == 400
    # A model's last version goes with the model, as in TorchServe; none is left to list.
    assert ops.unregister("m0", "1.0")[1] in (200, 202)
    assert "m0" not in [m["modelName"] for m in ops.list_models(None, None)["models"]]
