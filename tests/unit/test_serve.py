"""The gateway server's checks before any worker starts (gateway/serve.py)."""

import pytest

from gateway import serve

BASE = {"JWT_SECRET": "k" * 40, "PROMETHEUS_MULTIPROC_DIR": "/tmp/metrics"}


@pytest.mark.parametrize("env,message", [
    ({"GATEWAY_WORKERS": "2"}, "RATE_LIMIT_STORAGE_URI=redis://"),
    ({"GATEWAY_LOG_LEVEL": "loud"}, "GATEWAY_LOG_LEVEL must be one of"),
    ({"PROMETHEUS_MULTIPROC_DIR": ""}, "PROMETHEUS_MULTIPROC_DIR is not set"),
    ({"JWT_SECRET": ""}, "gateway: "),
])
def test_a_gateway_that_would_misbehave_does_not_start(monkeypatch, env, message):
    for name, value in {**BASE, **env}.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit, match=message):
        serve.checked_settings()


def test_two_workers_on_a_shared_store_start(monkeypatch):
    for name, value in {**BASE, "GATEWAY_WORKERS": "2",
                        "RATE_LIMIT_STORAGE_URI": "redis://127.0.0.1:6379"}.items():
        monkeypatch.setenv(name, value)
    assert serve.checked_settings().gateway_workers == 2


@pytest.mark.parametrize("bind,address", [
    ("127.0.0.1:8000", ("127.0.0.1", 8000)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    ("[::]:8000", ("::", 8000))])
def test_listen_addresses(bind, address):
    assert serve.listen_address(bind) == address


@pytest.mark.parametrize("bind", ["8000", ":8000", "host:", "host:http"])
def test_a_bind_without_host_and_port_is_refused(bind):
    with pytest.raises(SystemExit, match="GATEWAY_BIND must be host:port"):
        serve.listen_address(bind)
