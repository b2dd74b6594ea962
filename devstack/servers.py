"""Real TorchServe (alone, or as a replica with its model agent) and gateway processes (granian) on
free loopback ports, through our start scripts."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import requests

from agent import readiness
from devstack.waiting import MODEL_READY_S, SERVER_START_S, wait_for

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = str(Path(sys.executable).parent)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(extra: dict) -> dict:
    env = dict(os.environ)
    env["PATH"] = VENV_BIN + os.pathsep + env.get("PATH", "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Process:
    """A start script run in its own process group, stopped with SIGTERM, then SIGKILL."""

    def __init__(self, script: str, env: dict, log_path: Path):
        self.script, self.env, self.log_path = script, env, log_path
        self.proc = None

    def start(self):
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([str(ROOT / "scripts" / self.script)], env=_env(self.env),
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def stop(self, timeout: float = 30):
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        # The launcher's children (Java frontend, Python workers) share the group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def log_tail(self, chars: int = 4000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, probe, timeout: float, what: str):
        """wait_for(probe) on this process; a failed wait stops it, so that a fixture
        whose set-up fails leaves nothing running."""
        try:
            return wait_for(probe, timeout=timeout, what=what, alive=self.running,
                            log=self.log_tail)
        except BaseException:
            self.stop()
            raise


class TorchServeServer(Process):
    """TorchServe alone, loading `load_models` from `model_store` itself."""

    script = "start-torchserve.sh"

    def __init__(self, model_store: Path, run_dir: Path, load_models: str = "classifier-1.0.mar",
                 **env):
        self.inference_port, self.management_port, self.metrics_port = (
            free_port(), free_port(), free_port())
        run_dir.mkdir(parents=True, exist_ok=True)
        super().__init__(self.script, {
            "TS_INFERENCE_PORT": self.inference_port,
            "TS_MANAGEMENT_PORT": self.management_port,
            "TS_METRICS_PORT": self.metrics_port,
            "TS_GRPC_PORTS": f"{free_port()},{free_port()}",
            "TS_MODEL_STORE": model_store,
            "TS_RUN_DIR": run_dir,
            "TS_LOAD_MODELS": load_models,
            **env,
        }, run_dir / "stdout.log")
        self.run_dir, self.model_store = run_dir, model_store
        self.url = f"http://127.0.0.1:{self.inference_port}"
        self.management_url = f"http://127.0.0.1:{self.management_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}"

    def wait_ready(self, timeout: float = MODEL_READY_S) -> float:
        """Seconds until the default version has a READY worker."""
        started = time.monotonic()
        self.wait(lambda: readiness.check(self.management_url)[0], timeout,
                  "TorchServe's default version READY")
        return time.monotonic() - started


class ReplicaServer(TorchServeServer):
    """A model replica as scripts/start-serve.sh runs it: TorchServe and its model agent,
    on a store of its own that starts empty; it loads what the database declares
    (adopting MODEL_SEED from `seed_store` on a database with nothing declared)."""

    script = "start-serve.sh"

    def __init__(self, seed_store: Path, run_dir: Path, database_url: str, replica_id: str,
                 **env):
        self.state_file = run_dir / "agent-state.json"
        self.store = run_dir / "store"
        super().__init__(self.store, run_dir, load_models="", DATABASE_URL=database_url,
                         AGENT_STORE=self.store, AGENT_STATE_FILE=self.state_file,
                         REPLICA_ID=replica_id, MODEL_STORE=seed_store,
                         AGENT_INTERVAL_SECONDS=1, **env)
        self.replica_id = replica_id

    def ready(self) -> tuple[bool, str]:
        """The replica's readiness probe: its default READY (and a rollout's candidate)."""
        ok, reason = readiness.check(self.management_url)
        return readiness.agent_ready(str(self.state_file)) if ok else (ok, reason)

    def wait_ready(self, timeout: float = MODEL_READY_S) -> float:
        started = time.monotonic()
        self.wait(lambda: self.ready()[0], timeout, "the replica serving the declared default")
        return time.monotonic() - started

    def wait_converged(self, timeout: float = MODEL_READY_S) -> None:
        """Until its agent reports every declared version served, the default declared."""
        self.wait(lambda: json.loads(self.state_file.read_text())["converged"], timeout,
                  "the replica serving every declared version")


class GatewayServer(Process):
    def __init__(self, torchserve: TorchServeServer, run_dir: Path, **settings):
        self.port = free_port()
        run_dir.mkdir(parents=True, exist_ok=True)
        env = {
            "GATEWAY_BIND": f"127.0.0.1:{self.port}",
            "TORCHSERVE_URL": torchserve.url,
            "DATABASE_URL": f"sqlite:///{run_dir / 'predictions.db'}",
            "GATEWAY_STATE_DIR": run_dir / "state",
            "PROMETHEUS_MULTIPROC_DIR": run_dir / "metrics",
        }
        env.update({k.upper(): v for k, v in settings.items()})
        super().__init__("start-gateway.sh", env, run_dir / "gateway.log")
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_dir = run_dir / "metrics"

    def wait_up(self, timeout: float = SERVER_START_S) -> None:
        """Until /healthz answers 200: granian listens before its workers answer."""
        self.wait(lambda: requests.get(self.url + "/healthz", timeout=10).status_code == 200,
                  timeout, "the gateway's /healthz")

    @contextmanager
    def serving(self):
        """Started and answering for the block, stopped after it whatever happens."""
        self.start()
        try:
            self.wait_up()
            yield self
        finally:
            self.stop()
