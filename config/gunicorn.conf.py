"""gunicorn settings for the gateway, used by scripts/start-gateway.sh.

The gateway is an I/O-bound proxy: a request spends most of its time waiting on
TorchServe, so threads (gthread) carry the concurrency cheaply. One process with
32 threads is the default because the login rate limit then lives in memory; run
more processes (GATEWAY_WORKERS) only with RATE_LIMIT_STORAGE_URI pointing at a
shared store such as redis://, which the check below enforces.
"""

import os
import shutil

from core.settings import Settings, SettingsError
from gateway.identity.tokens import Tokens
from gateway.prediction_log.privacy import LogPrivacy

try:
    settings = Settings.from_env()
    LogPrivacy.from_settings(settings)  # the log's modes and keys file, before any worker
    Tokens.from_settings(settings)  # the signing keys and trusted issuers, likewise
except SettingsError as exc:  # stops here, with a clear message
    raise SystemExit(f"gateway: {exc}") from None

bind = settings.gateway_bind
workers = settings.gateway_workers
threads = settings.gateway_threads
worker_class = "gthread"
# Longer than the upstream read timeout (35 s), so TorchServe's answer always wins.
timeout = 60
graceful_timeout = 30
keepalive = 5
# Bounded request line and headers; bodies are bounded by MAX_UPLOAD_BYTES in the app.
limit_request_line = 8190
limit_request_fields = 100
accesslog = None
errorlog = "-"
loglevel = settings.gateway_log_level

if workers > 1 and settings.rate_limit_storage_uri.startswith("memory://"):
    raise SystemExit(
        "GATEWAY_WORKERS > 1 needs RATE_LIMIT_STORAGE_URI=redis://... so the login "
        "rate limit is shared by every worker (memory:// is per process)."
    )

# gunicorn's control socket defaults to one path in $HOME shared by every
# instance; we do not use it.
control_socket_disable = True

# Prometheus multiprocess mode: each worker writes its samples under this directory
# (PROMETHEUS_MULTIPROC_DIR, which scripts/start-gateway.sh sets before prometheus_client
# is imported anywhere) and /metrics aggregates them all. Emptied when the master starts.
DATABASE_RETRY_S = 2
metrics_dir = settings.prometheus_multiproc_dir
if not metrics_dir:
    raise SystemExit("gateway: PROMETHEUS_MULTIPROC_DIR is not set (start the gateway "
                     "with scripts/start-gateway.sh)")


def on_starting(server):
    """In the master, before any worker: fresh metrics files, and the database schema
    migrated (DATABASE_UPGRADE_ON_START) or checked, so a gateway never serves against
    a schema it does not know. With the database down it serves from its last control
    snapshot (gateway.models.control_snapshot) if it has one, and waits for the database if not."""
    shutil.rmtree(metrics_dir, ignore_errors=True)
    os.makedirs(metrics_dir, exist_ok=True)
    import time

    from sqlalchemy.exc import OperationalError

    from core.database import schema
    while True:
        try:
            if settings.database_upgrade_on_start:
                schema.upgrade(settings.database_url)
            else:
                schema.require_current(settings.database_url)
            return
        except schema.SchemaError as exc:  # stops here, with a clear message
            raise SystemExit(f"gateway: {exc}") from None
        except OperationalError as exc:
            if os.path.exists(settings.control_snapshot_file):
                server.log.warning(
                    "the prediction log's database is unreachable (%s): serving from the "
                    "control snapshot %s, rows into the outbox until it is back",
                    exc.orig, settings.control_snapshot_file)
                return
            server.log.warning("the prediction log's database is unreachable (%s) and there "
                               "is no control snapshot at %s: waiting for the database",
                               exc.orig, settings.control_snapshot_file)
            time.sleep(DATABASE_RETRY_S)


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
