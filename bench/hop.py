"""The hop alone: TorchServe direct and the gateway in front of it, on a model that costs
nothing (bench/instant_handler.py), so that HTTP, TorchServe's frontend and the gateway
are the whole bill.

    python -m bench.hop [--requests 600] [--concurrency 1,16,64] [--rounds 3] [--out bench/results]

At each concurrency four modes take turns in short rounds: `torchserve` (the raw image to
TorchServe's inference API), `predict` (the manual's multipart /predict), `oip` (/v2
infer, tritonclient) and `ts-api` (the gateway's /torchserve/predictions, the raw image).
Every round is metered by process: CPU per request, and requests/s per gateway core.
"""

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import requests

from bench import client
from bench.harness import (CpuMeter, Sections, alternate, bench_images, goal, oip_infer, print_cpu,
                           print_rows, print_summary, run_http)
from core.settings import Settings
from devstack.servers import ROOT, GatewayServer, TorchServeServer
from modelbuild import archive

INSTANT_HANDLER = Path(__file__).with_name("instant_handler.py")
# What weights.json says the instant model runs (GET /models, every answer's `weights`).
INSTANT_WEIGHTS = {"arch": "none", "source": "instant", "variant": "instant"}


def instant_archive(store: Path) -> Path:
    """classifier-1.0.mar with the instant handler, ImageNet's labels and no model file."""
    with tempfile.TemporaryDirectory() as work:
        archive.write_labels(Path(work), INSTANT_WEIGHTS)
        return archive.package(Path(work), "1.0", store, handler=INSTANT_HANDLER)


def hop_goals(row: dict, cpu: dict, top: int) -> dict:
    """#42's goals for the hop, from this run's figures."""
    split = cpu[f"predict, c={top}"]
    goals = {
        f"instant: gateway CPU / TorchServe Java frontend CPU per request, c={top}": goal(
            round(split["gateway"] / split["TorchServe Java frontend"], 2), "<=", 1.0),
        f"instant: gateway / TorchServe direct requests/s, c={top}": goal(round(
            row["predict", top]["images_per_s"] / row["torchserve", top]["images_per_s"], 3),
            ">=", 0.8)}
    if ("predict", 1) in row:
        goals["instant: gateway p50 minus TorchServe's, c=1 (ms)"] = goal(round(
            row["predict", 1]["p50_ms"] - row["torchserve", 1]["p50_ms"], 2), "<=", 1.5)
    return goals


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per mode and concurrency")
    parser.add_argument("--concurrency", default="1,16,64")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per cell")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    top = 16 if 16 in levels else max(levels)
    per_round = max(1, args.requests // args.rounds)
    payloads = bench_images()
    bodies = client.uploads(payloads)
    args.out.mkdir(parents=True, exist_ok=True)
    clock = Sections()
    with tempfile.TemporaryDirectory(prefix="bench-hop-") as tmp:
        tmp = Path(tmp)
        instant_archive(tmp / "store")
        torchserve = TorchServeServer(tmp / "store", tmp / "torchserve")
        gateway = GatewayServer(torchserve, tmp / "gateway", jwt_secret=os.urandom(32).hex(),
                                users_file=ROOT / "config/users.json",
                                # one user drives every cell, up to 64 at once: no quota,
                                # and nothing shed
                                predict_rate_limit="1000000 per minute",
                                max_inflight_predictions=max(levels),
                                gateway_threads=max(levels, default=0) + Settings.gateway_threads)
        try:
            torchserve.start()
            torchserve.wait_ready()
            gateway.start()
            gateway.wait_up()
            token = requests.post(gateway.url + "/token", timeout=30, data={
                "username": "client_user", "password": "tryClassifier"}).json()["access_token"]
            clock.done("set-up")
            meter = CpuMeter(gateway.proc.pid, torchserve.proc.pid)
            modes = {mode: meter.wrap(mode, lambda c, n, call=call: run_http(c, n, call))
                     for mode, call in {
                "torchserve": lambda i, pool: client.direct(
                    pool, torchserve.url, payloads[i % len(payloads)]).status,
                "predict": lambda i, pool: client.predict(
                    pool, gateway.url, token, bodies[i % len(bodies)]).status,
                "oip": oip_infer(gateway.url, token, payloads),
                "ts-api": lambda i, pool: client.direct(
                    pool, gateway.url + "/torchserve", payloads[i % len(payloads)], token).status,
            }.items()}
            results = [row for c in levels for row in alternate(modes, c, args.rounds, per_round)]
            clock.done("hop")
        finally:
            gateway.stop()
            torchserve.stop()
    cpu = meter.per_image_ms()
    row = {(r["mode"], r["concurrency"]): r for r in results}
    summary = {
        **{f"{mode}_over_torchserve_throughput_c{c}": round(
            row[mode, c]["images_per_s"] / row["torchserve", c]["images_per_s"], 3)
           for mode in ("predict", "oip", "ts-api") for c in levels},
        **{f"{mode}_minus_torchserve_p50_ms_c{c}": round(
            row[mode, c]["p50_ms"] - row["torchserve", c]["p50_ms"], 2)
           for mode in ("predict", "oip", "ts-api") for c in levels},
        # A core's worth of the gateway's CPU, spent on this path alone.
        **{f"{mode}_requests_per_gateway_core_c{c}": round(1000 / cpu[f"{mode}, c={c}"]["gateway"], 1)
           for mode in ("predict", "oip", "ts-api") for c in levels},
        "errors": sum(r["errors"] for r in results)}
    goals = hop_goals(row, cpu, top)
    report = {"date": datetime.now(timezone.utc).isoformat(), "machine": {"cpus": os.cpu_count()},
              "requests_per_cell": args.requests, "results": results, "cpu_ms_per_request": cpu,
              "section_seconds": clock.seconds, "summary": summary, "goals": goals}
    (args.out / "hop.json").write_text(json.dumps(report, indent=2))
    print_rows(results)
    print_cpu(cpu, "request")
    print_summary(summary, goals, "#42, the instant model")
    print(f"wrote {args.out / 'hop.json'}")
    return 1 if summary["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
