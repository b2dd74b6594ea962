"""What the benches share: the upload mix, the load generator's rounds, rows and goals,
and the CPU each process spends."""

import os
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import psutil
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from bench import client
from devstack import images
from gateway.models.rollouts.guard import percentile


def bench_images() -> list[bytes]:
    """A fixed mix of uploads: photos-sized JPEGs, a PNG, greyscale."""
    return [images.jpeg((640, 480)), images.jpeg((1024, 768)), images.png(), images.grey_png(),
            images.jpeg((320, 240)), images.rgba_png()]


def percentiles(latencies: list[float]) -> dict:
    if not latencies:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None}
    return {"p50_ms": round(statistics.median(latencies) * 1000, 2),
            "p95_ms": round(percentile(latencies, 0.95) * 1000, 2),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 2)}


def goal(figure: float | None, op: str, target: float) -> dict:
    """A goal's figure beside its target ("<=" or ">="), and whether it was met."""
    met = figure is not None and (figure >= target if op == ">=" else figure <= target)
    return {"figure": figure, "goal": f"{op} {target}", "met": met}


def print_goals(goals: dict) -> None:
    for name, g in goals.items():
        print(f"{name}: {g['figure']} (goal {g['goal']}: {'met' if g['met'] else 'missed'})")


def print_summary(summary: dict, goals: dict | None, issues: str) -> None:
    """The summary's figures, then the goals of `issues` beside them."""
    for key, value in summary.items():
        print(f"{key}: {value}")
    if goals:
        print(f"\ngoals ({issues})")
        print_goals(goals)


def print_rows(rows: list[dict], width: int = 16) -> None:
    """The rows as a table: mode, concurrency, throughput, latency percentiles, errors."""
    print(f"{'mode':<{width}}{'c':>4}{'per s':>9}{'p50':>9}{'p95':>9}{'p99':>9}{'errors':>8}")
    for r in rows:
        print(f"{r['mode']:<{width}}{r['concurrency']:>4}{r['images_per_s']:>9}{r['p50_ms']:>9}"
              f"{r['p95_ms']:>9}{r['p99_ms']:>9}{r['errors']:>8}")


def print_cpu(cpu: dict, per: str) -> None:
    """CpuMeter's milliseconds per `per` (image, request), by process."""
    print(f"\nCPU ms per {per}, by process")
    for mode, split in cpu.items():
        print(f"  {mode:<22}" + ", ".join(f"{name} {ms}" for name, ms in split.items()))


def summarise(mode: str, concurrency: int, runs: list[dict]) -> dict:
    """One row from several rounds: all latencies pooled, throughput over total wall time."""
    latencies = [x for r in runs for x in r["latencies"]]
    errors = [e for r in runs for e in r["errors"]]
    wall = sum(r["wall"] for r in runs)
    return {"mode": mode, "concurrency": concurrency, "requests": len(latencies) + len(errors),
            "errors": len(errors), "error_kinds": sorted({str(e) for e in errors}),
            "images_per_s": round(len(latencies) / wall, 2), **percentiles(latencies)}


def run_http(concurrency: int, total: int, call) -> dict:
    """`total` calls from `concurrency` threads; call(i, pool) -> status code, where pool
    is the thread's own client.new_pool()."""
    local = threading.local()
    latencies, errors = [], []

    def one(i):
        if not hasattr(local, "pool"):
            local.pool = client.new_pool()
        started = time.perf_counter()
        try:
            status = call(i, local.pool)
        except client.FAILURES as exc:
            status = type(exc).__name__
        elapsed = time.perf_counter() - started
        if status == 200:
            latencies.append(elapsed)
        else:
            errors.append(status)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(concurrency)))  # warm-up: connections, not counted
        latencies.clear()
        errors.clear()
        started = time.perf_counter()
        list(pool.map(one, range(total)))
    return {"latencies": latencies, "errors": errors, "wall": time.perf_counter() - started}


def oip_infer(url: str, token: str, payloads: list[bytes]):
    """A run_http call: one image through /v2 infer with tritonclient, a client per thread."""
    local = threading.local()

    def call(i, _pool):
        if not hasattr(local, "client"):
            local.client = triton.InferenceServerClient(url.removeprefix("http://"))
        tensor = triton.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([payloads[i % len(payloads)]], dtype=np.object_))
        try:
            local.client.infer("classifier", [tensor], headers={"Authorization": f"Bearer {token}"})
        except InferenceServerException as exc:
            return f"InferenceServerException {exc.status()}"
        return 200
    return call


def alternate(modes: dict, concurrency: int, rounds: int, per_round: int) -> list[dict]:
    """One row per mode; the modes take turns in short rounds, so that drift in the
    machine's load hits all of them alike."""
    runs = {mode: [] for mode in modes}
    for _ in range(rounds):
        for mode, run in modes.items():
            runs[mode].append(run(concurrency, per_round))
    return [summarise(mode, concurrency, runs[mode]) for mode in modes]


class Sections:
    """How long each section of the run took, in seconds."""

    def __init__(self):
        self.seconds, self.last = {}, time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name], self.last = round(now - self.last, 1), now


class CpuMeter:
    """CPU seconds each process of a served path spends, per image: the bench process
    (the load generator, or the in-process model), the gateway (granian), TorchServe's Java
    frontend and its Python model workers."""

    def __init__(self, gateway_pid: int, torchserve_pid: int):
        self.roots = {"gateway": gateway_pid, "torchserve": torchserve_pid}
        self.totals: dict[str, dict[str, float]] = {}

    def snapshot(self) -> dict[str, float]:
        """CPU seconds so far, by process."""
        seconds = {"bench process": _cpu(psutil.Process(os.getpid()))}
        for name, pid in self.roots.items():
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                with_name = name
                if name == "torchserve":
                    cmdline = " ".join(_safe(proc.cmdline))
                    with_name = ("TorchServe Java frontend" if proc.name() == "java" else
                                 "TorchServe model worker" if "model_service_worker" in cmdline
                                 else "torchserve launcher")
                seconds[with_name] = seconds.get(with_name, 0.0) + _cpu(proc)
        return seconds

    def wrap(self, mode: str, run):
        """`run` (concurrency, total) -> result, with its CPU added to `mode`'s totals."""
        def measured(concurrency: int, total: int) -> dict:
            before = self.snapshot()
            result = run(concurrency, total)
            after = self.snapshot()
            totals = self.totals.setdefault(f"{mode}, c={concurrency}", {"images": 0})
            totals["images"] += len(result["latencies"])
            for name, value in after.items():
                totals[name] = totals.get(name, 0.0) + value - before.get(name, 0.0)
            return result
        return measured

    def per_image_ms(self) -> dict[str, dict[str, float]]:
        return {mode: {name: round(seconds * 1000 / totals["images"], 2)
                       for name, seconds in totals.items() if name != "images"}
                for mode, totals in self.totals.items()}


def _cpu(proc: psutil.Process) -> float:
    try:
        times = proc.cpu_times()
    except psutil.NoSuchProcess:
        return 0.0
    return times.user + times.system


def _safe(method) -> list[str]:
    try:
        return method()
    except psutil.Error:
        return []
