"""The gateway's HTTP server: granian serving gateway.wsgi:app, started by
scripts/start-gateway.sh (`python -m gateway.serve`).

Before any worker starts, the main process checks what every worker would otherwise find
wrong alone: the settings, the log's privacy keys and the token keys; a shared rate-limit
store when there are several workers; a fresh metrics directory; and the database schema,
migrated (DATABASE_UPGRADE_ON_START) or checked, so that a gateway never serves against a
schema it does not know. With the database down it serves from its last control snapshot
(gateway.models.control_snapshot) if it has one, and waits for the database if not.

Each worker is a process with GATEWAY_THREADS threads for the app (it waits on TorchServe
most of the time); granian's own Rust threads parse HTTP and stream bodies.
"""

import logging
import os
import shutil
import time

from granian.constants import Interfaces
from granian.log import LogLevels
from granian.server import Server
from sqlalchemy.exc import OperationalError

from core.database import schema
from core.settings import Settings, SettingsError
from gateway.identity.tokens import Tokens
from gateway.prediction_log.privacy import LogPrivacy

DATABASE_RETRY_S = 2
# After SIGTERM, requests in flight get this long (Kubernetes' default grace period).
GRACEFUL_STOP_S = 30
PROCESS_NAME = "gateway-server"
logger = logging.getLogger("gateway.serve")


def checked_settings() -> Settings:
    """The settings, or SystemExit saying what is wrong."""
    try:
        settings = Settings.from_env()
        LogPrivacy.from_settings(settings)  # the log's modes and keys file, before any worker
        Tokens.from_settings(settings)  # the signing keys and trusted issuers, likewise
    except SettingsError as exc:
        raise SystemExit(f"gateway: {exc}") from None
    if settings.gateway_workers > 1 and settings.rate_limit_storage_uri.startswith("memory://"):
        raise SystemExit("gateway: GATEWAY_WORKERS > 1 needs RATE_LIMIT_STORAGE_URI=redis://... "
                         "so the login rate limit is shared by every worker (memory:// is per "
                         "process).")
    if settings.gateway_log_level not in {level.value for level in LogLevels}:
        raise SystemExit(f"gateway: GATEWAY_LOG_LEVEL must be one of "
                         f"{', '.join(level.value for level in LogLevels)}")
    if not settings.prometheus_multiproc_dir:
        raise SystemExit("gateway: PROMETHEUS_MULTIPROC_DIR is not set (start the gateway "
                         "with scripts/start-gateway.sh)")
    return settings


def ready_schema(settings: Settings) -> None:
    """The schema migrated or checked; a control snapshot stands in for a database down."""
    while True:
        try:
            if settings.database_upgrade_on_start:
                schema.upgrade(settings.database_url)
            else:
                schema.require_current(settings.database_url)
            return
        except schema.SchemaError as exc:
            raise SystemExit(f"gateway: {exc}") from None
        except OperationalError as exc:
            if os.path.exists(settings.control_snapshot_file):
                logger.warning(
                    "the prediction log's database is unreachable (%s): serving from the "
                    "control snapshot %s, rows into the outbox until it is back",
                    exc.orig, settings.control_snapshot_file)
                return
            logger.warning("the prediction log's database is unreachable (%s) and there is no "
                           "control snapshot at %s: waiting for the database",
                           exc.orig, settings.control_snapshot_file)
            time.sleep(DATABASE_RETRY_S)


def listen_address(bind: str) -> tuple[str, int]:
    """GATEWAY_BIND's (host, port): `0.0.0.0:8000`, `[::]:8000`."""
    host, _, port = bind.rpartition(":")
    if not host or not port.isdigit():
        raise SystemExit(f"gateway: GATEWAY_BIND must be host:port, not {bind!r}")
    return host.strip("[]"), int(port)


def server(settings: Settings) -> Server:
    host, port = listen_address(settings.gateway_bind)
    return Server(
        "gateway.wsgi:app", address=host, port=port, interface=Interfaces.WSGI,
        workers=settings.gateway_workers, blocking_threads=settings.gateway_threads,
        websockets=False, log_level=LogLevels(settings.gateway_log_level),
        # A worker that dies is replaced; SIGTERM lets requests in flight finish.
        respawn_failed_workers=True, workers_kill_timeout=GRACEFUL_STOP_S,
        # `gateway-server <dir>` and `... worker-N` in ps: what `make stop` and the tests find.
        process_name=f"{PROCESS_NAME} {os.getcwd()}")


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = checked_settings()
    shutil.rmtree(settings.prometheus_multiproc_dir, ignore_errors=True)
    os.makedirs(settings.prometheus_multiproc_dir, exist_ok=True)
    ready_schema(settings)
    server(settings).serve()


if __name__ == "__main__":
    main()
