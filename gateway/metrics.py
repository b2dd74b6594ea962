"""The gateway's Prometheus metrics (plain prometheus_client: the CLIs load it too).
GET /metrics is in gateway.web.health.

PROMETHEUS_MULTIPROC_DIR (set by scripts/start-gateway.sh) makes every worker process
write its samples to files there, and a scrape aggregates all of them, so one scrape
sees every worker, not one at random.
"""

import os
import re
from pathlib import Path

from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5, 5, 10, 30)

REQUESTS = Counter("gateway_requests_total", "HTTP requests answered",
                   ["route", "method", "status"])
REQUEST_LATENCY = Histogram("gateway_request_duration_seconds", "Time to answer a request",
                            ["route", "method"], buckets=LATENCY_BUCKETS)
UPSTREAM_LATENCY = Histogram("gateway_upstream_duration_seconds",
                             "Time TorchServe took to answer a prediction",
                             buckets=LATENCY_BUCKETS)
PREDICTIONS = Counter("gateway_predictions_total", "Successful predictions",
                      ["model_version", "class_id"])
AUTH_FAILURES = Counter("gateway_auth_failures_total", "Refused logins and tokens", ["reason"])
TOKEN_REVOCATIONS = Counter("gateway_token_revocations_total", "Tokens revoked", ["reason"])
RATE_LIMITED = Counter("gateway_rate_limited_total", "Requests refused by a rate limit",
                       ["route"])
ROLLOUT_REQUESTS = Counter("gateway_rollout_requests_total",
                           "Unpinned predictions during a rollout, by arm (default, canary, "
                           "shadow) and outcome (ok, failed: the candidate's failure)",
                           ["arm", "version", "outcome"])
ROLLOUT_LATENCY = Histogram("gateway_rollout_request_duration_seconds",
                            "Time to answer (shadow: to copy) a prediction during a rollout",
                            ["arm", "version"], buckets=LATENCY_BUCKETS)
ROLLBACKS = Counter("gateway_rollbacks_total", "Rollouts rolled back by their guard",
                    ["version", "reason"])
SHADOW_COMPARISONS = Counter("gateway_shadow_comparisons_total",
                             "Shadow copies compared with the default's answer",
                             ["version", "top1"])
SHADOW_DROPPED = Counter("gateway_shadow_dropped_total",
                         "Shadow copies dropped because the shadow queue was full")
SHED = Counter("gateway_shed_total", "Predictions refused with 503 because the gateway "
               "process had MAX_INFLIGHT_PREDICTIONS (or the caller MAX_INFLIGHT_PER_USER) "
               "in flight to TorchServe")
SHED_ROWS_LOST = Counter("gateway_shed_rows_lost_total",
                         "Prediction-log rows of shed calls not written: the write-behind "
                         "queue was full or the database failed")
PREDICTION_LOG_FAILURES = Counter("gateway_prediction_log_failures_total",
                                  "Predictions answered 503 because their log row could not "
                                  "be written")
# The prediction log's outbox (gateway.prediction_log.writer): every process of a gateway sees the
# same file, so a scrape takes the largest (the database: the smallest) of them.
DATABASE_UP = Gauge("gateway_database_up", "1 while the prediction log's database takes "
                    "writes, 0 while rows go to the outbox", multiprocess_mode="livemin")
OUTBOX_ROWS = Gauge("gateway_outbox_rows", "Prediction-log rows waiting in the outbox for "
                    "the database", multiprocess_mode="livemax")
OUTBOX_OLDEST_SECONDS = Gauge("gateway_outbox_oldest_seconds", "Age of the oldest row in "
                              "the outbox (0 when empty)", multiprocess_mode="livemax")
OUTBOXED_ROWS = Counter("gateway_outboxed_rows_total", "Prediction-log rows written to the "
                        "outbox because the database could not take them")
OUTBOX_DELIVERED_ROWS = Counter("gateway_outbox_delivered_rows_total",
                                "Outboxed rows delivered to the database")
OUTBOX_REJECTED_ROWS = Counter("gateway_outbox_rejected_rows_total",
                               "Outboxed rows the database refused on their own, kept aside "
                               "in the outbox's file")
UPLOAD_BYTES = Histogram("gateway_upload_bytes", "Size of uploaded images",
                         buckets=(1e3, 1e4, 1e5, 5e5, 1e6, 2.5e6, 5e6, 1e7))

LIVE_GAUGE_FILE = re.compile(r"gauge_live\w+_(\d+)\.db")


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges (livemin, livemax) of worker processes that are gone: the
    server replaces a dead worker without telling the app, so each scrape checks."""
    pids = {int(m.group(1)) for path in Path(directory).glob("gauge_live*.db")
            if (m := LIVE_GAUGE_FILE.fullmatch(path.name))}
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(pid, directory)
        except PermissionError:  # alive, another user's
            pass


# Labels known in advance start at 0, so that rates and alerts see them before the first.
for _route in ("/token", "/predict"):
    RATE_LIMITED.labels(_route)


class FleetCollector:
    """The model replicas' state as their agents last reported it to the database, read
    at each scrape (gateway.models.versions): READY workers per declared version of every
    model over the live replicas, and what each live replica does not serve yet. Every
    gateway exports the same figures: alert on their max."""

    def __init__(self, models):
        self.models = models

    def collect(self):
        ready = GaugeMetricFamily(
            "model_version_ready_workers", "READY workers of a declared model version, summed "
            "over the live replicas", labels=["model", "version", "default"])
        missing = GaugeMetricFamily(
            "model_replica_missing_versions", "Declared versions a live replica does not serve",
            labels=["model", "replica"])
        failing = GaugeMetricFamily(
            "model_version_load_failures", "Live replicas that report a declared model "
            "version cannot load there", labels=["model", "version"])
        live = 0
        for name in self.models.names():
            versions = self.models.versions(name, known=False)
            declared, fleet = versions.catalog.declared(), versions.fleet()
            live = max(live, len(fleet.live))
            for version in declared:
                ready.add_metric([name, version.version, str(version.is_default).lower()],
                                 sum(r.ready.get(version.version, 0) for r in fleet.live))
                failing.add_metric([name, version.version],
                                   sum(version.version in r.errors for r in fleet.live))
            for replica in fleet.live:
                missing.add_metric([name, replica.replica_id],
                                   sum(not replica.serves(d.version) for d in declared))
        yield ready
        yield missing
        yield failing
        yield GaugeMetricFamily("model_replicas_live", "Replicas whose agent reported within "
                                "REPLICA_STALE_SECONDS", value=live)
