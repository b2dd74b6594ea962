"""Overload: the gateway driven past capacity, each crowd for a fixed time.

    python -m bench.overload [--seconds 60] [--concurrency 16,64,128] [--victim 4]
                             [--modes polite,impolite,fairness] [--out bench/results]

Every client sends one prediction after another. Three modes, on one stack:
- polite: on a 503 a client waits what Retry-After says, as a well-behaved client does;
- impolite: on a 503 it sends again at once (clients that retry in a loop);
- fairness: the demo user's `--victim` polite clients alone, then again while a second
  user floods with the top concurrency's impolite clients.
Per crowd: goodput (200s per second), the latency of the 200s and of the 503s, every
answer counted (none may time out), and the cores each process used meanwhile (the load
generator is this process, on the same machine). The first concurrency is the reference
(the peak, c=16 by default). Each goal is printed with its figure and target; a missed
goal is reported, not an error (the exit status counts failed requests only).
"""

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench import client
from bench.harness import CpuMeter, bench_images, goal, percentiles, print_goals
from bench.profile import server_timing
from core.settings import Settings
from devstack.servers import ROOT
from devstack.signing import use_signing_key
from devstack.stack import get_token, signing_keys, start_stack, users_file_with
from modelbuild import archive, weights

MODES = ("polite", "impolite", "fairness")
FLOODER = ("flooder", "flooder-password")  # the fairness mode's second user


def crowd(url: str, token: str, uploads: list[tuple[bytes, str]], clients: int,
          seconds: float, polite: bool = True) -> dict:
    served, shed, failed, advised, shed_stages = [], [], [], [], []
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
                    if "Server-Timing" in response.headers:
                        shed_stages.append(server_timing(response))
                    if polite:
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
    return {"concurrency": clients, "polite": polite, "seconds": round(wall, 1),
            "served": len(served), "shed": len(shed), "failed": len(failed),
            "failures": sorted(set(map(str, failed))),
            "goodput_per_s": round(len(served) / wall, 2), **percentiles(served),
            "shed_p50_ms": shed_latency["p50_ms"], "shed_p99_ms": shed_latency["p99_ms"],
            "retry_after_mean_s": round(sum(advised) / len(advised), 2) if advised else None,
            # Where a refusal's time went inside the gateway (its Server-Timing), p50 ms.
            "shed_stages_p50_ms": {stage: round(statistics.median(
                t[stage] for t in shed_stages if stage in t), 2)
                for stage in sorted({k for t in shed_stages for k in t})}}


def together(meter: CpuMeter, *crowds) -> list[dict]:
    """Run crowds (argument tuples for `crowd`) at the same time; their rows, the last
    one with the cores each process used meanwhile."""
    before = meter.snapshot()
    with ThreadPoolExecutor(len(crowds)) as pool:
        rows = list(pool.map(lambda args: crowd(*args), crowds))
    after = meter.snapshot()
    answers = sum(r["served"] + r["shed"] for r in rows)
    rows[-1]["cores"] = {name: round((after[name] - before.get(name, 0.0)) / rows[-1]["seconds"],
                                     2) for name in after}
    rows[-1]["gateway_cpu_ms_per_answer"] = round(
        (after["gateway"] - before["gateway"]) * 1000 / answers, 2) if answers else None
    return rows


def ratio(a, b, digits=3):
    return round(a / b, digits) if a is not None and b else None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60, help="per crowd")
    parser.add_argument("--concurrency", default="16,64,128", help="the first is the reference")
    parser.add_argument("--victim", type=int, default=4, help="the fairness mode's other user")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--max-inflight", type=int, default=Settings.max_inflight_predictions,
                        help="MAX_INFLIGHT_PREDICTIONS of the gateway under test")
    parser.add_argument("--max-inflight-per-user", type=int,
                        default=Settings.max_inflight_per_user,
                        help="MAX_INFLIGHT_PER_USER of the gateway under test")
    parser.add_argument("--inflight-wait-ms", type=int, default=Settings.inflight_wait_ms,
                        help="INFLIGHT_WAIT_MS of the gateway under test")
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = args.modes.split(",")
    reference_c, top_c = levels[0], levels[-1]
    uploads = client.uploads(bench_images())
    args.out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="overload-") as tmp:
        tmp = Path(tmp)
        use_signing_key(tmp / "model-signing")  # its archive signed, its replica trusting it
        archive.build("1.0", weights.random_weights(0), tmp / "store")
        users = users_file_with(ROOT / "config" / "users.json", tmp / "users.json", [FLOODER])
        # The shipped in-flight bounds (test stacks raise them for their load tests).
        torchserve, gateway = start_stack(
            tmp, tmp / "store", users.path, signing_keys(tmp / "jwt-keys.json"),
            max_inflight_predictions=args.max_inflight,
            max_inflight_per_user=args.max_inflight_per_user,
            inflight_wait_ms=args.inflight_wait_ms)
        try:
            token = get_token(gateway)
            flooder = get_token(gateway, *FLOODER)
            url = gateway.url
            meter = CpuMeter(gateway.proc.pid, torchserve.proc.pid)

            def one(*crowd_args):
                return together(meter, (url, *crowd_args))[0]

            reference = one(token, uploads, reference_c, args.seconds)
            if "polite" in modes:
                rows["polite"] = [reference] + [one(token, uploads, c, args.seconds)
                                                for c in levels[1:]]
            if "impolite" in modes:
                rows["impolite"] = [reference] + [
                    one(token, uploads, c, args.seconds, False) for c in levels[1:]]
            if "fairness" in modes:
                alone = one(token, uploads, args.victim, args.seconds)
                victim, flood = together(
                    meter, (url, token, uploads, args.victim, args.seconds),
                    (url, flooder, uploads, top_c, args.seconds, False))
                rows["fairness"] = [alone, victim, flood]
        finally:
            gateway.stop()
            torchserve.stop()
    goals = {}
    for mode in ("polite", "impolite"):
        if mode in rows:
            top = rows[mode][-1]
            goals[f"{mode}: goodput c{top_c} / c{reference_c}"] = goal(
                ratio(top["goodput_per_s"], reference["goodput_per_s"]), ">=", 0.9)
            goals[f"{mode}: 200s p99 c{top_c} / c{reference_c}"] = goal(
                ratio(top["p99_ms"], reference["p99_ms"], 2), "<=", 1.5)
            goals[f"{mode}: 503s p99 ms, worst crowd"] = goal(
                max((r["shed_p99_ms"] or 0) for r in rows[mode]), "<=", 100)
    if "fairness" in rows:
        alone, victim, _ = rows["fairness"]
        goals[f"fairness: c{args.victim} goodput with a c{top_c} flood / alone"] = goal(
            ratio(victim["goodput_per_s"], alone["goodput_per_s"]), ">=", 0.9)
    failed = sum(r["failed"] for mode_rows in rows.values() for r in mode_rows)
    (args.out / "overload.json").write_text(json.dumps(
        {"rows": rows, "goals": goals, "failed": failed}, indent=2))
    print(f"{'mode':>9}{'c':>5}{'s':>6}{'served':>8}{'shed':>7}{'failed':>8}{'goodput/s':>11}"
          f"{'p50':>8}{'p99':>8}{'shed p50':>10}{'shed p99':>10}{'retry s':>9}")
    for mode, mode_rows in rows.items():
        for r in mode_rows:
            print(f"{mode:>9}{r['concurrency']:>5}{r['seconds']:>6}{r['served']:>8}"
                  f"{r['shed']:>7}{r['failed']:>8}{r['goodput_per_s']:>11}{str(r['p50_ms']):>8}"
                  f"{str(r['p99_ms']):>8}{str(r['shed_p50_ms']):>10}{str(r['shed_p99_ms']):>10}"
                  f"{str(r['retry_after_mean_s']):>9}")
    for mode, mode_rows in rows.items():
        for r in mode_rows:
            if "cores" in r:
                print(f"{mode} c={r['concurrency']}: cores used {r['cores']}, gateway CPU "
                      f"per answer {r['gateway_cpu_ms_per_answer']} ms")
            if r["shed_stages_p50_ms"]:
                print(f"{mode} c={r['concurrency']}: a refusal's stages in the gateway, p50 ms: "
                      f"{r['shed_stages_p50_ms']}")
    print_goals(goals)
    print(f"failed requests: {failed} (goal 0)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
