"""Overload: the gateway driven past capacity, each crowd for a fixed time.

    python -m bench.overload [--seconds 60] [--concurrency 16,64,128] [--out bench/results]

Every client sends one prediction after another; on a 503 it waits what Retry-After
says, as a well-behaved client does. Per crowd: goodput (200s per second), the
latency of the 200s and of the 503s, and every answer counted (none may time out).
The first crowd is the reference (the peak, c=16 by default).
"""

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench import client
from bench.run import bench_images, percentiles
from gateway.settings import Settings
from modelbuild import archive, weights
from tests.support.servers import ROOT
from tests.support.stack import get_token, signing_keys, start_stack


def crowd(url: str, token: str, uploads: list[tuple[bytes, str]], clients: int,
          seconds: float) -> dict:
    served, shed, failed, advised = [], [], [], []
    deadline = time.monotonic() + seconds

    def one_client(n):
        with client.new_pool() as pool:
            i = n
            while time.monotonic() < deadline:
                sent = time.perf_counter()
                try:
                    response = client.predict(pool, url, token, uploads[i % len(uploads)])
                    status = response.status
                except client.FAILURES as exc:
                    status, response = type(exc).__name__, None
                elapsed = time.perf_counter() - sent
                i += clients
                if status == 200:
                    served.append(elapsed)
                elif status == 503:
                    shed.append(elapsed)
                    advised.append(float(response.headers.get("Retry-After", 1)))
                    time.sleep(min(advised[-1], max(0.0, deadline - time.monotonic())))
                else:
                    failed.append(status)

    threads = [threading.Thread(target=one_client, args=(n,)) for n in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    shed_latency = percentiles(shed)
    return {"concurrency": clients, "seconds": round(wall, 1), "served": len(served),
            "shed": len(shed), "failed": len(failed), "failures": sorted(set(map(str, failed))),
            "goodput_per_s": round(len(served) / wall, 2), **percentiles(served),
            "shed_p50_ms": shed_latency["p50_ms"], "shed_p99_ms": shed_latency["p99_ms"],
            "retry_after_mean_s": round(sum(advised) / len(advised), 2) if advised else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="per crowd")
    parser.add_argument("--concurrency", default="16,64,128", help="the first is the reference")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--max-inflight", type=int, default=Settings.max_inflight_predictions,
                        help="MAX_INFLIGHT_PREDICTIONS of the gateway under test")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    uploads = client.uploads(bench_images())
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        tmp = Path(tmp)
        archive.build("1.0", weights.random_weights(0), tmp / "store")
        # The shipped in-flight bound (test stacks raise it for their load tests).
        torchserve, gateway = start_stack(
            tmp, tmp / "store", ROOT / "config" / "users.json", signing_keys(tmp / "jwt-keys.json"),
            max_inflight_predictions=args.max_inflight)
        try:
            token = get_token(gateway)
            rows = [crowd(gateway.url, token, uploads, c, args.seconds) for c in levels]
        finally:
            gateway.stop()
            torchserve.stop()
    reference, top = rows[0], rows[-1]
    summary = {
        f"goodput_c{top['concurrency']}_over_c{reference['concurrency']}": round(
            top["goodput_per_s"] / reference["goodput_per_s"], 3),
        f"p99_c{top['concurrency']}_over_c{reference['concurrency']}": round(
            top["p99_ms"] / reference["p99_ms"], 2),
        "shed_p99_ms_max": max((r["shed_p99_ms"] or 0) for r in rows),
        "failed": sum(r["failed"] for r in rows),
    }
    (args.out / "overload.json").write_text(json.dumps({"rows": rows, "summary": summary},
                                                       indent=2))
    print(f"{'c':>5}{'s':>6}{'served':>8}{'shed':>7}{'failed':>8}{'goodput/s':>11}"
          f"{'p50':>8}{'p99':>8}{'shed p50':>10}{'shed p99':>10}{'retry s':>9}")
    for r in rows:
        print(f"{r['concurrency']:>5}{r['seconds']:>6}{r['served']:>8}{r['shed']:>7}"
              f"{r['failed']:>8}{r['goodput_per_s']:>11}{r['p50_ms']:>8}{r['p99_ms']:>8}"
              f"{str(r['shed_p50_ms']):>10}{str(r['shed_p99_ms']):>10}"
              f"{str(r['retry_after_mean_s']):>9}")
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 1 if summary["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
