"""Throwaway PostgreSQL, Redis, HAProxy, Prometheus and OpenID provider servers for the
tests, on free loopback ports."""

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import requests

from devstack.servers import ROOT, free_port
from devstack.waiting import SERVER_START_S, wait_for

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
        subprocess.run([*self.as_user, *args], check=True, capture_output=True,
                       timeout=SERVER_START_S + 30)

    def log_tail(self) -> str:
        log = self.dir / "log"
        return log.read_text(errors="replace")[-4000:] if log.exists() else ""

    def start(self):
        self.dir.mkdir()
        if self.as_user:
            pw = pwd.getpwnam("postgres")
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        self._run(_pg_tool("initdb"), "-D", str(self.dir), "-A", "trust", "-U", "postgres")
        try:
            self.start_server()
        except RuntimeError:
            self.stop()
            raise
        return self

    def start_server(self):
        """pg_ctl -w waits until the server accepts connections, for at most -t seconds."""
        try:
            self._run(_pg_tool("pg_ctl"), "-D", str(self.dir), "-w", "-t", str(SERVER_START_S),
                      "-l", str(self.dir / "log"),
                      "-o", f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1",
                      "start")
        except subprocess.SubprocessError as exc:
            raise RuntimeError(f"PostgreSQL did not start: {exc}\n{self.log_tail()}") from None

    def stop_server(self):
        """An outage: the server stops (fast: open sessions end), its data stays."""
        self._run(_pg_tool("pg_ctl"), "-D", str(self.dir), "-m", "fast", "-w", "stop")

    def stop(self):
        try:
            self.stop_server()
        except subprocess.CalledProcessError:
            pass  # not running (it never started)
        shutil.rmtree(self.base, ignore_errors=True)


def terminate(proc: subprocess.Popen) -> None:
    """SIGTERM, and SIGKILL if it has not ended 30 s later."""
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(30)


class Redis:
    def __init__(self):
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.proc = None

    def start(self):
        self.log = tempfile.NamedTemporaryFile(prefix="test-redis-", suffix=".log")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no"], stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(self._answers, timeout=SERVER_START_S, what="redis-server's PING",
                     alive=lambda: self.proc.poll() is None,
                     log=lambda: Path(self.log.name).read_text(errors="replace")[-4000:])
        except BaseException:
            self.stop()
            raise
        return self

    def _answers(self) -> bool:
        probe = subprocess.run(["redis-cli", "-p", str(self.port), "ping"],
                               capture_output=True, text=True, timeout=10)
        return probe.stdout.strip() == "PONG"

    def stop(self):
        terminate(self.proc)
        self.log.close()


class HAProxy:
    """A load balancer in front of model replicas' inference ports, as a Kubernetes
    Service is: `set_backends` lists the ready replicas (the test plays the endpoints
    controller), a reload keeps connections in flight (master-worker mode, SIGUSR2)."""

    def __init__(self, work: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config, self.log = work / "haproxy.cfg", work / "haproxy.log"
        self.proc = None

    def set_backends(self, ports: list[int]):
        servers = "".join(f"    server replica{i} 127.0.0.1:{port} check inter 1s\n"
                          for i, port in enumerate(ports))
        self.config.write_text(
            "global\n    maxconn 512\n"
            "defaults\n    mode http\n    timeout connect 2s\n    timeout client 120s\n"
            "    timeout server 120s\n    retries 2\n    option redispatch\n"
            "    retry-on conn-failure empty-response\n"
            f"frontend inference\n    bind 127.0.0.1:{self.port}\n    default_backend replicas\n"
            "backend replicas\n    balance roundrobin\n    option httpchk GET /ping\n"
            + servers)
        if self.proc is not None:
            self.proc.send_signal(signal.SIGUSR2)

    def start(self, ports: list[int]):
        self.set_backends(ports)
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(["haproxy", "-W", "-db", "-f", str(self.config)],
                                         stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: requests.get(self.url + "/ping", timeout=10).status_code == 200,
                     timeout=SERVER_START_S, what="TorchServe's /ping through HAProxy",
                     alive=lambda: self.proc.poll() is None,
                     log=lambda: self.log.read_text(errors="replace")[-4000:])
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self):
        if self.proc is not None:
            terminate(self.proc)


def required_or_skip(available: bool, what: str):
    """Outside CI a missing server skips with a reason; under CI=true it fails."""
    import pytest

    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{what} is required under CI (.ci/run installs it)")
    pytest.skip(f"{what} is not installed here; .ci/run installs it in CI")


class LoggedServer:
    """A server process logging into `work`, ready when `ready_url` answers 200."""

    name = "server"

    def launch(self, argv: list[str], ready_url: str, what: str):
        self.log = open(self.work / f"{self.name}.log", "ab")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: requests.get(ready_url, timeout=10).status_code == 200,
                     timeout=SERVER_START_S, what=what,
                     alive=lambda: self.proc.poll() is None, log=self.log_tail)
        except BaseException:
            self.stop()
            raise
        return self

    def log_tail(self) -> str:
        return (self.work / f"{self.name}.log").read_text(errors="replace")[-4000:]

    def stop(self):
        if self.proc is not None:
            terminate(self.proc)
            self.log.close()
            self.proc = None


class Prometheus(LoggedServer):
    """Debian's Prometheus scraping `targets` ({job: ["host:port", ...]}) every second,
    with the project's alert rules loaded (config/prometheus/alerts.yml), evaluated every
    second; its HTTP API on a free loopback port."""

    def __init__(self, work: Path, targets: dict[str, list[str]]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.work, self.proc = work, None
        self.config = work / "prometheus.yml"
        self.config.write_text(json.dumps({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(ROOT / "config" / "prometheus" / "alerts.yml")],
            "scrape_configs": [{"job_name": job, "static_configs": [{"targets": hosts}]}
                               for job, hosts in targets.items()],
        }))  # JSON is YAML

    name = "prometheus"

    def start(self):
        return self.launch(["prometheus", f"--config.file={self.config}",
                            f"--storage.tsdb.path={self.work / 'data'}",
                            f"--web.listen-address=127.0.0.1:{self.port}"],
                           self.url + "/-/ready", "Prometheus ready")

    def api(self, path: str, **params):
        answer = requests.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        answer.raise_for_status()
        return answer.json()["data"]

    def query(self, expr: str) -> list[dict]:
        """The instant vector `expr` gives now."""
        return self.api("query", query=expr)["result"]

    def alerts(self, name: str) -> list[dict]:
        """The alert's firing or pending instances."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"]["alertname"] == name]


OIDC_DIR = ROOT / "devstack" / "oidc"


def signing_jwk(kid: str) -> dict:
    """A new private EC P-256 JWK for the provider to sign with."""
    from cryptography.hazmat.primitives.asymmetric import ec
    from jwt.algorithms import ECAlgorithm

    jwk = ECAlgorithm.to_jwk(ec.generate_private_key(ec.SECP256R1()), as_dict=True)
    return {**jwk, "kid": kid, "alg": "ES256", "use": "sig"}


def openid_provider_available() -> bool:
    return shutil.which("node") is not None and (OIDC_DIR / "node_modules" / "oidc-provider").is_dir()


class OpenIdProvider(LoggedServer):
    """oidc-provider (npm, OpenID Certified) on Debian's node: JWT access tokens by client
    credentials. `clients`: {client_id: (groups, token lifetime in seconds)};
    `resources`: {audience: the scopes it grants}.
    Restarting with other keys (on the same port and issuer) is how it rotates."""

    def __init__(self, work: Path, clients: dict, resources: dict):
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}"
        self.work, self.proc = work, None
        self.secrets = {client: os.urandom(16).hex() for client in clients}
        self.config = {
            "port": self.port,
            "clients": [{"client_id": c, "client_secret": self.secrets[c], "groups": groups,
                         "ttl": ttl} for c, (groups, ttl) in clients.items()],
            "resources": resources,
        }

    name = "provider"

    def start(self, keys: list[dict]):
        (self.work / "provider.json").write_text(json.dumps({**self.config, "keys": keys}))
        return self.launch(["node", str(OIDC_DIR / "provider.mjs"),
                            str(self.work / "provider.json")],
                           self.issuer + "/.well-known/openid-configuration",
                           "the OpenID provider's discovery")

    def token(self, client: str, resource: str | None = None) -> str:
        answer = requests.post(self.issuer + "/token", auth=(client, self.secrets[client]),
                               timeout=30, data={"grant_type": "client_credentials",
                                                 **({"resource": resource} if resource else {})})
        answer.raise_for_status()
        return answer.json()["access_token"]

    def jwks_fetches(self) -> int:
        return requests.get(self.issuer + "/test/jwks-fetches", timeout=10).json()["fetches"]
