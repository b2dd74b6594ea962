"""The container engine (docker, else podman) as the deploy tests drive it.

Containers are reached only through ports published on 127.0.0.1, never their
own addresses.
"""

import subprocess
import time
from pathlib import Path

import requests
import yaml

from devstack import images
from devstack.servers import ROOT, VENV_BIN
from devstack.waiting import CONTAINER_READY_S, wait_for

COMPOSE_FILE = ROOT / "docker-compose.yaml"


class Engine:
    def __init__(self, name: str):
        self.name = name

    @classmethod
    def find(cls) -> "Engine | None":
        found = subprocess.run([str(ROOT / "scripts/container-engine.sh")], capture_output=True,
                               text=True)
        return cls(found.stdout.strip()) if found.returncode == 0 else None

    def __call__(self, *args, check: bool = True, timeout: float = 120,
                 **kwargs) -> subprocess.CompletedProcess:
        result = subprocess.run([self.name, *map(str, args)], capture_output=True, text=True,
                                timeout=timeout, **kwargs)
        if check and result.returncode != 0:
            raise RuntimeError(f"{self.name} {' '.join(map(str, args))} failed "
                               f"({result.returncode}):\n{result.stdout}\n{result.stderr}")
        return result

    def compose_command(self) -> list[str]:
        if self.name == "docker":
            return ["docker", "compose"]
        return [str(Path(VENV_BIN) / "podman-compose")]

    def healthy(self, container: str) -> bool:
        """The container's own HEALTHCHECK passes now.

        podman 4 runs health checks from systemd timers, which these machines do
        not have, so it is asked to run the check once; docker runs them itself.
        """
        if self.name == "podman":
            return self("healthcheck", "run", container, check=False, timeout=60).returncode == 0
        status = self("inspect", "--format", "{{.State.Health.Status}}", container, check=False)
        return status.stdout.strip() == "healthy"

    def wait_healthy(self, container: str, timeout: float = CONTAINER_READY_S) -> float:
        """Seconds until healthy; raises with the container's log otherwise."""
        start = time.monotonic()
        wait_for(lambda: self.healthy(container), timeout=timeout, what=f"{container} healthy",
                 log=lambda: self.logs(container), interval=2)
        return time.monotonic() - start

    def logs(self, container: str) -> str:
        out = self("logs", "--tail", "60", container, check=False)
        return (out.stdout + out.stderr)[-6000:]

    def volume_exists(self, name: str) -> bool:
        return self("volume", "inspect", name, check=False).returncode == 0

    def published(self, container: str) -> str:
        """`port` output: every host mapping of the container (empty when none)."""
        return self("port", container, check=False).stdout.strip()


def compose_service(name: str) -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())["services"][name]


def hardening_args(service: dict) -> list[str]:
    """`run` flags for a Compose service's user, read-only root, capabilities and tmpfs."""
    args = ["--user", str(service["user"])]
    if service.get("read_only"):
        args.append("--read-only")
    args += [f"--cap-drop={cap}" for cap in service.get("cap_drop", [])]
    args += [f"--security-opt={opt}" for opt in service.get("security_opt", [])]
    args += [f"--tmpfs={path}" for path in service.get("tmpfs", [])]
    return args


def wait_ready(url: str, timeout: float = CONTAINER_READY_S) -> float:
    """Seconds until GET url/readyz answers 200."""
    start = time.monotonic()
    wait_for(lambda: requests.get(url + "/readyz", timeout=10).status_code == 200,
             timeout=timeout, what=f"{url}/readyz 200", interval=1)
    return time.monotonic() - start


def round_trip(url: str, username: str = "client_user", password: str = "tryClassifier") -> dict:
    """POST /token, then POST /predict with a real JPEG; the prediction answer."""
    token = requests.post(url + "/token", data={"username": username, "password": password},
                          timeout=30)
    assert token.status_code == 200, token.text
    answer = requests.post(url + "/predict", files={"file": ("cat.jpg", images.jpeg())},
                           headers={"Authorization": f"Bearer {token.json()['access_token']}"},
                           timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True and body["username"] == username
    assert 0 <= body["class_id"] < 1000 and 0 <= body["score"] <= 100
    return body
