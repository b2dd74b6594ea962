"""Throwaway PostgreSQL and Redis servers for the tests, on free loopback ports."""

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.servers import free_port

PG_BIN_DIRS = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)


def _pg_tool(name: str) -> str | None:
    for directory in PG_BIN_DIRS:
        if (directory / name).exists():
            return str(directory / name)
    return shutil.which(name)


def postgres_available() -> bool:
    return bool(_pg_tool("initdb") and _pg_tool("pg_ctl"))


class Postgres:
    """initdb + pg_ctl on a temporary directory; as the postgres user when we are root."""

    def __init__(self):
        # Not under pytest's tmp dir: that one is private to root, and the server
        # runs as the postgres user when we are root (initdb refuses root).
        self.base = Path(tempfile.mkdtemp(prefix="test-pg-"))
        self.dir = self.base / "pgdata"
        self.port = free_port()
        self.as_user = []
        if os.geteuid() == 0:
            self.as_user = ["runuser", "-u", "postgres", "--"]
            self.base.chmod(0o755)
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args):
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, timeout=120)

    def start(self):
        self.dir.mkdir()
        if self.as_user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(_pg_tool("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")
        self._run(_pg_tool("pg_ctl"), "-D", str(self.dir), "-w", "-l", str(self.dir / "log"),
                  "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1", "start")
        return self

    def stop(self):
        self._run(_pg_tool("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.base, ignore_errors=True)


class Redis:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                                   capture_output=True, text=True)
            if probe.stdout.strip() == "PONG":
                return self
            time.sleep(0.1)
        raise TimeoutError("redis-server did not start")

    def stop(self):
        self.proc.terminate()
        self.proc.wait(10)


def required_or_skip(available: bool, what: str):
    """Outside CI a missing server skips with a reason; under CI=true it fails."""
    import pytest

    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed here; .ci/run installs it in CI")
