"""Where the time goes: the per-stage breakdown at c=1 that `make bench` prints.

Stages come from the Server-Timing headers the gateway and the handler send (gateway:
auth, quota, read, check, upstream, log, app; handler: preprocess, inference, postprocess),
TorchServe's queue time from its Prometheus counters read before and after each request
(it has no per-request figure; one request at a time, the difference is that request's),
and the client's own clock.
"""

import statistics
import time

import requests

from bench import client
from core.torchserve_client import stage_seconds
from handler import resnet_handler as handler
from modelbuild.handler_files import transform_batch

HANDLER_STAGES = ("preprocess", "inference", "postprocess")
# Rows: (label, how to get it in ms from one request's figures), in request order.
INSIDE_TORCHSERVE = (
    ("TorchServe queue and batch wait", lambda s: s["queue"]),
    ("handler preprocess (decode, resize)", lambda s: s["preprocess"]),
    ("handler inference", lambda s: s["inference"]),
    ("handler postprocess", lambda s: s["postprocess"]),
)
TOTAL = ("total seen by the client", lambda s: s["total"])
GATEWAY_ROWS = (
    ("client, HTTP to the gateway, granian", lambda s: s["total"] - s["app"]),
    ("gateway: token and quota", lambda s: s["auth"] + s["quota"]),
    ("gateway: read the upload", lambda s: s["read"]),
    ("gateway: image header check", lambda s: s["check"]),
    ("gateway -> TorchServe: HTTP, frontend, worker protocol",
     lambda s: s["upstream"] - s["queue"] - sum(s[k] for k in HANDLER_STAGES)),
    *INSIDE_TORCHSERVE,
    ("gateway: prediction-log write", lambda s: s["log"]),
    ("gateway: Flask, JSON answer, the rest",
     lambda s: s["app"] - sum(s[k] for k in ("auth", "quota", "read", "check", "upstream",
                                             "log"))),
    TOTAL,
)
DIRECT_ROWS = (
    ("client -> TorchServe: HTTP, frontend, worker protocol",
     lambda s: s["total"] - s["queue"] - sum(s[k] for k in HANDLER_STAGES)),
    *INSIDE_TORCHSERVE,
    TOTAL,
)


def server_timing(response) -> dict[str, float]:
    """{"inference": 22.1, ...} in ms from a response's Server-Timing header."""
    return {name: seconds * 1000
            for name, seconds in stage_seconds(response.headers["Server-Timing"]).items()}


def queue_totals(metrics_url: str) -> tuple[float, float]:
    """TorchServe's (queue microseconds, requests), summed over every model version."""
    queued = requests_ = 0.0
    for line in requests.get(metrics_url + "/metrics", timeout=10).text.splitlines():
        if line.startswith("ts_queue_latency_microseconds{"):
            queued += float(line.rsplit(" ", 1)[1])
        elif line.startswith("ts_inference_requests_total{"):
            requests_ += float(line.rsplit(" ", 1)[1])
    return queued, requests_


def _median_rows(rows, samples: list[dict]) -> list[dict]:
    return [{"stage": label, "p50_ms": round(statistics.median(pick(s) for s in samples), 2)}
            for label, pick in rows]


def breakdown(gateway_url: str, token: str, torchserve, model, payloads: list[bytes],
              uploads: list[tuple[bytes, str]], requests_each: int) -> dict:
    """`requests_each` requests at c=1 through the gateway and straight to TorchServe,
    taking turns, and the in-process step timed in its two parts on the same images."""
    pool = client.new_pool()
    through, direct = [], []
    for i in range(requests_each + 2):  # the first pair warms the connections
        for kind, samples in (("gateway", through), ("direct", direct)):
            before = queue_totals(torchserve.metrics_url)
            started = time.perf_counter()
            if kind == "gateway":
                response = client.predict(pool, gateway_url, token, uploads[i % len(uploads)])
            else:
                response = client.direct(pool, torchserve.url, payloads[i % len(payloads)])
            total = (time.perf_counter() - started) * 1000
            after = queue_totals(torchserve.metrics_url)
            if response.status != 200:
                raise RuntimeError(f"{kind} answered {response.status}: {response.data[:200]!r}")
            queued = (after[0] - before[0]) / 1000 / max(1.0, after[1] - before[1])
            if i >= 2:
                samples.append({**server_timing(response), "total": total, "queue": queued})
    in_process = []
    for i in range(requests_each):
        started = time.perf_counter()
        batch = transform_batch([payloads[i % len(payloads)]])
        decoded = time.perf_counter()
        handler.classify(model, batch).topk(5)
        done = time.perf_counter()
        in_process.append({"preprocess": (decoded - started) * 1000,
                           "inference": (done - decoded) * 1000,
                           "total": (done - started) * 1000})
    return {"requests": requests_each,
            "gateway": _median_rows(GATEWAY_ROWS, through),
            "torchserve": _median_rows(DIRECT_ROWS, direct),
            "in-process": _median_rows((
                ("preprocess (decode, resize)", lambda s: s["preprocess"]),
                ("inference", lambda s: s["inference"]),
                ("total", lambda s: s["total"])), in_process)}


def print_breakdown(result: dict) -> None:
    print(f"\nwhere the milliseconds go at c=1 (p50 of {result['requests']} requests each; "
          "stage p50s need not add up to the total's)")
    for path in ("gateway", "torchserve", "in-process"):
        for row in result[path]:
            print(f"  {path:<11}{row['stage']:<56}{row['p50_ms']:>9}")


def per_call_us(call, argument, calls: int = 2000, repeats: int = 5) -> float:
    """One call's cost in this process, in microseconds: the median of `repeats` runs."""
    runs = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(calls):
            call(argument)
        runs.append((time.perf_counter() - started) / calls * 1e6)
    return round(statistics.median(runs), 1)
