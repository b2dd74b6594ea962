"""The Flask app with a fake TorchServe: validation, error mapping, JSON errors."""

import json
import re
import time

import pytest
import requests
import urllib3
from openapi_spec_validator import validate
from urllib3.exceptions import (ConnectTimeoutError, DecodeError, NewConnectionError, ProtocolError,
                                ReadTimeoutError)

from core.database import schema
from core.settings import Settings
from devstack import images
from devstack.servers import ROOT, free_port
from gateway.app import create_app
from gateway.identity.principals import SCOPES
from gateway.identity.users import UserStore

PREDICTION = {
    "model_name": "classifier", "model_version": "1.0",
    "predictions": [{"class_id": i, "category_name": f"c{i}", "probability": p}
                    for i, p in enumerate([0.876, 0.05, 0.03, 0.02, 0.01])],
}


def fake_response(status: int, body) -> urllib3.HTTPResponse:
    return urllib3.HTTPResponse(body=json.dumps(body).encode(), status=status)


class FakePool:
    """Answers every call with the next scripted response or exception."""

    def __init__(self):
        self.outcome = fake_response(200, PREDICTION)
        self.calls = []

    def request(self, method, url, **kwargs):
        self.calls.append((method, url, kwargs))
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


@pytest.fixture
def app(tmp_path, request):
    users = tmp_path / "users.json"
    UserStore(users).set_user("alice", "alice-password", "user")
    database_url = f"sqlite:///{tmp_path / 'log.db'}"
    schema.upgrade(database_url)
    app = create_app(Settings(jwt_secret="k" * 40, users_file=str(users),
                              max_upload_bytes=200_000, max_image_pixels=1_000_000,
                              database_url=database_url, gateway_state_dir=str(tmp_path),
                              **getattr(request, "param", {})))
    torchserve = app.extensions["gateway"].torchserve
    torchserve.pool = torchserve.inference = FakePool()  # management and inference calls
    return app


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def auth(client):
    token = client.post("/token", data={"username": "alice", "password": "alice-password"}).json
    return {"Authorization": f"Bearer {token['access_token']}"}


def multipart_body(*files):
    """Encoded as a real client (requests) does it: werkzeug's test encoder drops the
    CRLF before the closing boundary of an empty part."""
    prepared = requests.Request("POST", "http://x/", files=list(files)).prepare()
    return {"data": prepared.body, "content_type": prepared.headers["Content-Type"]}


def upload(client, auth, data, name="cat.jpg", query=""):
    return client.post("/predict" + query, headers=auth, **multipart_body(("file", (name, data))))


def test_prediction_keeps_the_old_contract(client, auth, app):
    response = upload(client, auth, images.jpeg(), name="Cat.JPG")
    assert response.status_code == 200
    body = response.json
    for key in ("username", "filename", "extension", "date", "class_id", "category_name",
                "score", "success"):
        assert key in body
    assert body["username"] == "alice" and body["filename"] == "Cat.JPG"
    assert body["extension"] == "jpg" and body["score"] == 88 and body["success"] is True
    assert body["model_version"] == "1.0" and len(body["top_k"]) == 5
    method, url, kwargs = app.extensions["gateway"].torchserve.pool.calls[-1]
    assert url.endswith("/predictions/classifier")
    assert kwargs["headers"]["X-Request-ID"] == response.headers["X-Request-ID"]
    assert (kwargs["timeout"].connect_timeout, kwargs["timeout"].read_timeout) == (2.0, 35.0)
    assert kwargs["body"] == images.jpeg()


def test_pinned_version_goes_to_the_versioned_url(client, auth, app):
    assert upload(client, auth, images.png(), query="?model_version=2.0").status_code == 200
    assert app.extensions["gateway"].torchserve.pool.calls[-1][1].endswith("/classifier/2.0")
    assert upload(client, auth, images.png(), query="?model_version=../x").status_code == 422


@pytest.mark.parametrize("outcome,status", [
    (NewConnectionError(None, "refused"), 503),
    (ConnectTimeoutError("slow connect"), 503),
    (ProtocolError("Connection aborted", ConnectionResetError()), 503),
    (ReadTimeoutError(None, "/predictions/classifier", "slow read"), 504),
    (DecodeError("bad chunk"), 502),
    (fake_response(200, {"unexpected": "shape"}), 502),
    (urllib3.HTTPResponse(body=b"<html>busy</html>", status=503), 503),
    (fake_response(503, {"code": 503, "message": "no worker"}), 503),
    (fake_response(500, {"code": 500, "message": "worker died"}), 503),
    (fake_response(404, {"code": 404, "message": "Model not found"}), 404),
    (fake_response(422, {"error": "image data is corrupt: broken data stream"}), 422),
    (fake_response(418, {}), 502),
])
def test_upstream_failures_map_to_clear_answers(client, auth, app, outcome, status):
    app.extensions["gateway"].torchserve.pool.outcome = outcome
    response = upload(client, auth, images.jpeg())
    assert response.status_code == status
    assert set(response.json) == {"detail"}
    if status == 503:
        assert response.headers["Retry-After"] == "5"
    if status == 422:
        assert response.json["detail"] == "image data is corrupt: broken data stream"


@pytest.mark.parametrize("data,status,detail", [
    (b"", 422, "file is empty"),
    (b"hello world", 415, "not an image"),
    (images.truncated_jpeg()[:200], 422, "image header is corrupt"),
    (images.bomb_png(2000, 2000), 422, "pixels"),
    (b"\xff" * 200_001, 413, "larger than"),
])
def test_bad_uploads_never_reach_torchserve(client, auth, app, data, status, detail):
    response = upload(client, auth, data)
    assert response.status_code == status, response.json
    assert detail in response.json["detail"]
    assert app.extensions["gateway"].torchserve.pool.calls == []


def test_form_shape_errors(client, auth):
    assert client.post("/predict", headers=auth).status_code == 422
    response = client.post("/predict", headers=auth, **multipart_body(
        ("file", ("a.png", images.png())), ("file", ("b.png", images.png()))))
    assert response.status_code == 422 and "exactly one" in response.json["detail"]


def test_oversized_form_bodies_are_413(client):
    response = client.post("/token", data={"username": "a", "password": "b" * 300_000})
    assert response.status_code == 413
    assert response.json == {"detail": "request body is larger than 265536 bytes"}


def test_token_errors(client):
    assert client.post("/token", data={"username": "alice"}).status_code == 422
    bad = client.post("/token", data={"username": "alice", "password": "nope-nope"})
    unknown = client.post("/token", data={"username": "zed", "password": "nope-nope"})
    assert bad.status_code == unknown.status_code == 401
    assert bad.json == unknown.json
    assert bad.headers["WWW-Authenticate"] == "Bearer"
    assert bad.json["error"] == "invalid_grant"
    for answer in (bad, unknown):
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["Pragma"] == "no-cache"
    grant = client.post("/token", data={"username": "alice", "password": "alice-password",
                                        "grant_type": "authorization_code"})
    assert grant.status_code == 422 and grant.json["error"] == "unsupported_grant_type"


def test_missing_and_bad_tokens(client):
    for headers in ({}, {"Authorization": "Bearer "}, {"Authorization": "Bearer a.b.c"},
                    {"Authorization": "Basic abc"}):
        response = upload(client, headers, images.png())
        assert response.status_code == 401
        if headers.get("Authorization", "").strip() in ("", "Bearer", "Basic abc"):
            # No bearer token at all: no error code (RFC 6750 §3.1).
            assert response.headers["WWW-Authenticate"] == "Bearer"
            assert set(response.json) == {"detail"}
        else:
            assert response.headers["WWW-Authenticate"] == (
                'Bearer error="invalid_token", error_description="token is malformed"')
            assert response.json == {"detail": "token is malformed", "error": "invalid_token",
                                     "error_description": "token is malformed"}


def log_rows(app) -> int:
    with app.extensions["gateway"].prediction_log.engine.connect() as connection:
        return connection.exec_driver_sql("SELECT count(*) FROM predictions").scalar()


def drop_the_log(app) -> None:
    with app.extensions["gateway"].prediction_log.engine.begin() as connection:
        connection.exec_driver_sql("DROP TABLE predictions")


def test_refused_tokens_leave_no_row_and_stay_401_with_the_database_gone(client, auth, app):
    """The caller is checked before a prediction is attempted: no token is 401, never a
    row, whatever the database's state; a caller with a token is answered, and the
    row waits in the outbox."""
    assert upload(client, {}, images.png()).status_code == 401
    assert log_rows(app) == 0
    drop_the_log(app)
    refused = upload(client, {"Authorization": "Bearer a.b.c"}, images.png())
    assert refused.status_code == 401 and refused.json["error"] == "invalid_token"
    assert upload(client, {}, images.png()).status_code == 401
    assert upload(client, auth, images.png()).status_code == 200
    outbox = app.extensions["gateway"].log_writer.outbox
    assert outbox.depth(time.time()).rows == 1


@pytest.mark.parametrize("app", [{"outbox_max_rows": 0}], indirect=True)
def test_past_the_outbox_bound_a_prediction_is_refused_not_lost(client, auth, app):
    drop_the_log(app)
    unlogged = upload(client, auth, images.png())
    assert unlogged.status_code == 503
    assert unlogged.json == {"detail": "prediction log is unavailable, try again"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and "OUTBOX_MAX_ROWS 0" in ready.json["detail"]


def test_the_rollout_resource_answers_under_its_old_name_too(client, app):
    from gateway.identity.users import UserStore

    UserStore(app.extensions["gateway"].settings.users_file).set_user(
        "root", "root-password", "admin")
    token = client.post("/token", data={"username": "root", "password": "root-password"}).json
    admin = {"Authorization": f"Bearer {token['access_token']}"}
    for path in ("/models/classifier/rollout", "/models/classifier/canary"):
        ended = client.delete(path, headers=admin)
        assert ended.status_code == 409
        assert ended.json == {"detail": "model classifier has no active rollout"}
        assert client.put(path, headers=admin, json={"percent": 10}).json == {
            "detail": "version is required (a registered model version)"}


def test_unknown_routes_and_methods_are_json(client):
    assert client.get("/nope").status_code == 404
    assert set(client.get("/nope").json) == {"detail"}
    response = client.get("/predict")
    assert response.status_code == 405 and set(response.json) == {"detail"}


def test_filenames_are_sanitised(client, auth):
    body = upload(client, auth, images.png(), name="../../etc/pass\x00wd.png").json
    assert body["filename"] == "passwd.png" and body["extension"] == "png"
    long_name = "a" * 1000 + ".png"
    assert len(upload(client, auth, images.png(), name=long_name).json["filename"]) == 255


def test_request_id_is_echoed_or_made(client):
    assert client.get("/healthz", headers={"X-Request-ID": "abc"}).headers["X-Request-ID"] == "abc"
    made = client.get("/healthz", headers={"X-Request-ID": "bad id <script>"}).headers["X-Request-ID"]
    assert made != "bad id <script>" and len(made) == 32


def test_openapi_declares_both_grants_and_every_scope(client):
    """Swagger UI's Authorize offers what /token serves, with the scopes routes ask for."""
    spec = client.get("/openapi.json").json
    flows = spec["components"]["securitySchemes"]["OAuth2"]["flows"]
    assert set(flows) == {"password", "clientCredentials"}
    assert all(f["tokenUrl"] == "/token" and set(f["scopes"]) == set(SCOPES)
               for f in flows.values())
    asked = {scope for ops in spec["paths"].values() for op in ops.values()
             for need in op.get("security", []) for scope in need.get("OAuth2", [])}
    assert asked == set(SCOPES)
    assert {"/token", "/predict", "/healthz", "/readyz"} <= set(spec["paths"])
    docs = client.get("/docs/")
    assert docs.status_code == 200 and b"swagger-ui-bundle.js" in docs.data
    assert b"//cdn" not in docs.data and b"https://" not in docs.data
    assert client.get("/docs/swagger-ui-bundle.js").status_code == 200


def test_every_route_is_in_the_openapi_spec(app, client):
    spec_paths = set(client.get("/openapi.json").json["paths"])
    routes = {rule.rule.replace("<", "{").replace(">", "}") for rule in app.url_map.iter_rules()
              if not rule.rule.startswith(("/docs", "/static"))}
    assert routes == spec_paths


def test_openapi_spec_is_valid_and_every_operation_is_tagged(client):
    spec = client.get("/openapi.json").json
    validate(spec)  # raises on any violation of the OpenAPI 3.0 schema
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert all(op.get("tags") for op in operations)


def test_docs_status_table_matches_the_spec(client):
    """docs/api.md "Statuses per operation" lists exactly the statuses the spec documents."""
    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    section = page.split("## Statuses per operation", 1)[1].split("\n#", 1)[0]
    in_docs = {f"{method} {path}": set(statuses.split(", "))
                 for method, path, statuses in re.findall(
                     r"^\| `([A-Z]+) (\S+)` \| ([0-9, ]+) \|$", section, re.MULTILINE)}
    spec = client.get("/openapi.json").json
    in_spec = {f"{method.upper()} {path}": set(op["responses"])
               for path, ops in spec["paths"].items() for method, op in ops.items()}
    assert in_docs == in_spec


def test_every_error_status_has_an_error_schema(client):
    spec = client.get("/openapi.json").json
    responses = spec["components"]["responses"]
    missing = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, answer in op["responses"].items():
                answer = responses[answer["$ref"].rsplit("/", 1)[1]] if "$ref" in answer else answer
                schema = answer.get("content", {}).get("application/json", {}).get("schema", {})
                if int(status) >= 400 and not schema.get("$ref", "").endswith(
                        ("/Error", "/OipError", "/TorchServeError")) \
                        and path != "/torchserve/ping":  # TorchServe's {"status": "Unhealthy"}
                    missing.append(f"{method.upper()} {path} {status}")
    assert missing == []


def test_rate_limit_storage_outage_is_503_not_500(tmp_path):
    """Fail closed: without its Redis the gateway neither allows unlimited logins nor 500s."""
    users = tmp_path / "users.json"
    UserStore(users).set_user("alice", "alice-password", "user")
    app = create_app(Settings(jwt_secret="k" * 40, users_file=str(users), prediction_log=False,
                              gateway_state_dir=str(tmp_path),
                              rate_limit_storage_uri=f"redis://127.0.0.1:{free_port()}"))
    response = app.test_client().post("/token", data={"username": "alice",
                                                      "password": "alice-password"})
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert response.json == {"detail": "rate-limit storage is unavailable, try again"}


@pytest.mark.parametrize("query, status", [
    ("", 200), ("from=2026-11-01", 200), ("from=2026-11-01T00:00:00Z&to=2026-12-01", 200),
    ("to=2026-12-01T12:00:00.123456789%2B05:30&group_by=version", 200),
    ("from=0001-01-01T00:00:00%2B05:00&group_by=user", 200),
    ("from=", 422), ("from=2026-11-01T00:00:00", 422), ("from=20261101", 422),
    ("from=2026-12-01&to=2026-11-01", 200),
    ("from=2026-02-30", 422), ("group_by=month", 422),
])
def test_usage_parameters_are_checked_before_any_query(client, auth, query, status):
    answer = client.get(f"/usage?{query}", headers=auth)
    assert answer.status_code == status, answer.json
    if status == 200:
        assert answer.json["groups"] == [] and answer.json["from"].endswith("+00:00")


def test_the_logs_admin_routes_refuse_users(client, auth):
    assert client.get("/predictions/export", headers=auth).status_code == 403
    assert client.delete("/users/alice/predictions", headers=auth).status_code == 403
    assert client.delete("/users/alice/predictions").status_code == 401
