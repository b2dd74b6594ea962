"""Security posture: fails if a default that keeps us safe is ever loosened."""

import base64
import json
import re
import subprocess

import bcrypt
import pytest
import requests

from devstack.servers import ROOT, GatewayServer
from devstack.stack import DEMO_PASSWORD, DEMO_USER

pytestmark = pytest.mark.e2e


def properties(text: str) -> dict:
    values = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


def test_torchserve_never_fetches_model_urls(torchserve):
    running = properties((torchserve.run_dir / "config.properties").read_text())
    assert running["allowed_urls"] == f"file://{torchserve.model_store}/[^/]*[.]mar"
    assert "http" not in running["allowed_urls"]
    shipped = properties((ROOT / "config/config.properties").read_text())
    assert "allowed_urls" not in shipped  # only the start script sets it, to the store
    assert shipped["enable_model_api"] == "true"
    assert shipped["disable_token_authorization"] == "true"
    assert shipped["install_py_dep_per_model"] == "false"
    assert shipped["grpc_inference_address"] == shipped["grpc_management_address"] == "127.0.0.1"
    for key in ("inference_address", "management_address", "metrics_address"):
        assert running[key].startswith("http://127.0.0.1:")


def test_a_real_token_carries_no_password_data(gateway):
    token = requests.post(gateway.url + "/token", timeout=30,
                          data={"username": DEMO_USER, "password": DEMO_PASSWORD}).json()["access_token"]
    header, payload, _ = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(header + "=="))
    assert header == {"alg": "ES256", "typ": "JWT", "kid": header["kid"]} and header["kid"]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert set(claims) == {"sub", "scope", "iat", "nbf", "exp", "iss", "aud", "jti"}
    flat = json.dumps(claims)
    assert DEMO_PASSWORD not in flat and "$2b$" not in flat
    assert claims["exp"] - claims["nbf"] == 1800


@pytest.mark.parametrize("env,message", [
    ({}, "Neither JWT_KEYS_FILE nor JWT_SECRET is set"),
    ({"JWT_SECRET": "too-short-secret"}, "JWT_SECRET must be at least 32 bytes"),
    ({"JWT_KEYS_FILE": "/nonexistent/jwt-keys.json"}, "JWT_KEYS_FILE: [Errno 2]"),
    ({"JWT_KEYS_FILE": "/etc/hostname"}, "JWT_KEYS_FILE: "),
    ({"JWT_SECRET": "s" * 40, "TRUSTED_ISSUERS_FILE": "/nonexistent/issuers.json"},
     "TRUSTED_ISSUERS_FILE: [Errno 2]"),
], ids=["none", "short_secret", "missing_keys_file", "not_a_keys_file", "missing_issuers"])
def test_gateway_refuses_to_start_without_a_strong_secret(torchserve, tmp_path, env, message):
    gateway = GatewayServer(torchserve, tmp_path, **{k.lower(): v for k, v in env.items()})
    gateway.start()
    try:
        assert gateway.proc.wait(30) != 0
    finally:
        gateway.stop()
    assert message in gateway.log_tail()


def _secret_patterns():
    # Assembled from pieces so this file does not match itself.
    return {
        "private key": re.compile("-----BEGIN [A-Z ]*" + "PRIVATE KEY-----"),
        "JWT": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\." + r"eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
        "AWS key": re.compile("AKIA" + "[0-9A-Z]{16}"),
        "assigned secret": re.compile(r"(?im)^\s*(JWT_SECRET|POSTGRES_PASSWORD)[ \t]*[=:][ \t]*['\"]?[^\s'\"$]{8,}"),
        "bcrypt hash of a non-demo password": re.compile(r"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}"),
    }


def test_no_tracked_file_holds_a_secret():
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, timeout=60)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    findings = []
    for name in filter(None, listed.stdout.decode().split("\0")):
        path = ROOT / name
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        for what, pattern in _secret_patterns().items():
            for match in pattern.finditer(text):
                if what.startswith("bcrypt") and bcrypt.checkpw(DEMO_PASSWORD.encode(),
                                                                match.group().encode()):
                    continue  # the documented demo user's hash
                findings.append(f"{name}: {what}")
    assert findings == []


def test_secret_patterns_catch_what_they_should():
    samples = {
        "private key": "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE",
        "JWT": "eyJhbGciOiJIUzI1NiJ9" + "." + "eyJzdWIiOiJhbGljZSJ9" + ".abcdefghijklmnop",
        "AWS key": "AKIA" + "ABCDEFGHIJKLMNOP",
        "assigned secret": "JWT_SECRET" + "=s3cr3t-value-here",
        "bcrypt hash of a non-demo password": bcrypt.hashpw(b"other", bcrypt.gensalt(4)).decode(),
    }
    for what, pattern in _secret_patterns().items():
        assert pattern.search(samples[what]), what
    assert not _secret_patterns()["assigned secret"].search("JWT_SECRET=\nPOSTGRES_PASSWORD=\n")
