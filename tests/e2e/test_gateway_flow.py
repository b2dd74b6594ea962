"""The README's round trip and every documented error, through real granian + TorchServe."""

import json
import shutil
import subprocess

import pytest
import requests

from devstack import images
from devstack.stack import DEMO_PASSWORD, DEMO_USER

pytestmark = pytest.mark.e2e


def curl(*args) -> dict:
    out = subprocess.run(["curl", "-s", *args], capture_output=True, text=True, timeout=60,
                         check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("make,name", [(images.jpeg, "cat.jpg"), (images.png, "cat.png"),
                                       (images.grey_png, "grey.png"), (images.rgba_png, "rgba.png")])
def test_readme_curl_flow(gateway, tmp_path, make, name):
    path = tmp_path / name
    path.write_bytes(make())
    # Exactly the README's two commands, with the test's port.
    token = curl("-X", "POST", f"{gateway.url}/token",
                 "-d", f"username={DEMO_USER}", "-d", f"password={DEMO_PASSWORD}")
    assert token["token_type"] == "bearer" and token["expires_in"] == 1800
    body = curl("-X", "POST", f"{gateway.url}/predict",
                "-H", f"Authorization: Bearer {token['access_token']}", "-F", f"file=@{path}")
    assert body["success"] is True and body["username"] == DEMO_USER
    assert body["filename"] == name and body["extension"] == name.rsplit(".", 1)[1]
    assert 0 <= body["score"] <= 100 and len(body["top_k"]) == 5
    assert body["model_version"] == "1.0"


def post_file(gateway, token, data, name="x.jpg", **kwargs):
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(gateway.url + "/predict", headers=headers,
                         files={"file": (name, data)}, timeout=60, **kwargs)


def test_documented_errors_for_real(gateway, user_token):
    cases = [
        (None, images.jpeg(), 401),
        ("not-a-jwt", images.jpeg(), 401),
        (user_token, b"\0" * 10_500_000, 413),
        (user_token, b"just text", 415),
        (user_token, images.truncated_jpeg(), 422),
    ]
    for token, data, status in cases:
        response = post_file(gateway, token, data)
        assert response.status_code == status, (status, response.text)
        # A bad token adds OAuth2's error fields (RFC 6750); nothing else does.
        assert set(response.json()) == ({"detail", "error", "error_description"}
                                        if token == "not-a-jwt" else {"detail"})
    assert requests.get(gateway.url + "/no/such/route", timeout=10).json() == {
        "detail": requests.get(gateway.url + "/no/such/route", timeout=10).json()["detail"]}
    assert requests.get(gateway.url + "/no/such/route", timeout=10).status_code == 404
    # Each error leaves the next good request working.
    assert post_file(gateway, user_token, images.jpeg()).status_code == 200


def test_expired_token_is_401(gateway, jwt_keys):
    from core.settings import Settings
    from gateway.identity.keys import KeyRing
    from gateway.identity.tokens import Tokens

    settings = Settings(jwt_secret="", jwt_keys_file=jwt_keys)
    expired = Tokens(settings, KeyRing(jwt_keys, settings.jwt_ttl_seconds)).issue(
        DEMO_USER, ("predict",), now=0)
    response = post_file(gateway, expired, images.jpeg())
    assert response.status_code == 401 and response.json()["detail"] == "token has expired"


def test_failed_logins_are_rate_limited(gateway):
    answers = [requests.post(gateway.url + "/token", timeout=30,
                             data={"username": "mallory", "password": f"guess-{i}"})
               for i in range(6)]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert int(answers[-1].headers["Retry-After"]) > 0
    assert set(answers[-1].json()) == {"detail"}
    # Another user from the same client is not locked out.
    assert requests.post(gateway.url + "/token", timeout=30, data={
        "username": DEMO_USER, "password": DEMO_PASSWORD}).status_code == 200


def test_unknown_model_version_is_404(gateway, user_token):
    response = post_file(gateway, user_token, images.jpeg(), params={"model_version": "7.7"})
    assert response.status_code == 404 and "7.7" in response.json()["detail"]


def test_service_endpoints(gateway):
    assert requests.get(gateway.url + "/healthz", timeout=10).json() == {"status": "ok"}
    ready = requests.get(gateway.url + "/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json()["model_version"] == "1.0"
    assert requests.get(gateway.url + "/openapi.json", timeout=10).json()["openapi"].startswith("3.")
    assert "swagger-ui" in requests.get(gateway.url + "/docs/", timeout=10).text
    assert requests.get(gateway.url + "/", timeout=10).json()["links"]["docs"] == "/docs"


def test_server_timing_says_where_the_milliseconds_went(gateway, torchserve, user_token):
    response = post_file(gateway, user_token, images.jpeg((800, 600)))
    assert response.status_code == 200
    stages = {name: float(duration) for name, duration in (
        entry.split(";dur=") for entry in response.headers["Server-Timing"].split(", "))}
    assert list(stages) == ["auth", "quota", "read", "check", "upstream", "preprocess",
                            "inference", "postprocess", "log", "app"]
    # The handler's stages happen inside the upstream call, which is inside the app's time.
    assert stages["preprocess"] + stages["inference"] + stages["postprocess"] < stages["upstream"]
    assert sum(stages[k] for k in ("auth", "quota", "read", "check", "upstream", "log")) \
        <= stages["app"]
    assert stages["inference"] > 1  # a ResNet-18 forward pass, in ms
    # TorchServe answers with the handler's stages itself.
    direct = requests.post(torchserve.url + "/predictions/classifier", data=images.jpeg(),
                           timeout=60)
    assert [e.split(";")[0] for e in direct.headers["Server-Timing"].split(", ")] == [
        "preprocess", "inference", "postprocess"]
    # A refused prediction still says what it spent.
    refused = post_file(gateway, user_token, b"just text")
    assert refused.status_code == 415 and "check;dur=" in refused.headers["Server-Timing"]
