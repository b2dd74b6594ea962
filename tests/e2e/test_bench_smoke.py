"""The bench harness runs end to end (a few requests), so `make bench` cannot rot."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from devstack.backends import postgres_available, required_or_skip
from devstack.servers import ROOT

# Deadlines for a whole bench run on a loaded 2-core machine: it builds three archives
# and starts TorchServe and three gateways.
BENCH_S, OVERLOAD_S, REPLICAS_S = 1200, 900, 900
pytestmark = pytest.mark.e2e


def a_figure(value) -> bool:
    """A difference or ratio that the run printed: a finite number (its sign belongs to
    the machine, not to the harness)."""
    return isinstance(value, (int, float)) and math.isfinite(value)


def run_bench(module: str, report: str, out: Path, timeout: float, *args: str) -> dict:
    """`python -m bench.<module> ... --out out`, which must exit 0; its JSON report."""
    result = subprocess.run([sys.executable, "-m", f"bench.{module}", *args, "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads((out / report).read_text())


@pytest.mark.timeout(BENCH_S + 60)
def test_bench_smoke(tmp_path):
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    report = run_bench("run", "bench.json", tmp_path, BENCH_S, "--requests", "4", "--rounds", "1",
                       "--concurrency", "1,2")
    modes = {(r["mode"], r["concurrency"]) for r in report["results"]}
    assert modes == {(m, c) for m in ("in-process", "torchserve", "gateway") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["results"])
    summary = report["summary"]
    assert summary["errors"] == 0 and summary["torchserve_ready_s"] > 0
    assert "gateway_over_in_process_throughput_c2" in summary
    # Round two's goals, as ratios and differences the run prints.
    assert summary["gateway_int8_over_in_process_int8_throughput_c2"] > 0
    assert a_figure(summary["gateway_minus_in_process_p50_ms_c1"])
    assert a_figure(summary["gateway_int8_minus_in_process_int8_p50_ms_c1"])
    assert summary["gateway_p99_over_p50_c1"] >= 1 and summary["gateway_int8_p99_over_p50_c1"] >= 1
    variants = {(r["mode"], r["concurrency"]) for r in report["variants"]}
    assert variants == {(m, c) for m in ("in-process", "in-process-int8", "gateway",
                                         "gateway-int8") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["variants"])
    assert summary["int8_agreement_images"] == 200
    assert summary["int8_kept"] == (summary["int8_top1_agreement"] >= 0.99)
    assert summary["int8_speedup_in-process_c1"] > 0
    assert [r["mode"] for r in report["oip"]] == ["gateway", "gateway-oip"]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["oip"])
    assert summary["oip_over_predict_throughput_c2"] > 0
    # TorchServe's inference API at the gateway, beside /predict and TorchServe direct.
    assert {(r["mode"], r["concurrency"]) for r in report["torchserve_api"]} == {
        (m, c) for m in ("torchserve", "gateway", "gateway-ts-api") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["torchserve_api"])
    assert summary["ts_api_over_torchserve_throughput_c2"] > 0
    assert [r["mode"] for r in report["shadow"]] == ["gateway", "gateway-shadow"]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["shadow"])
    # A share of warm-up and 4 requests is copied: compared, or dropped and counted.
    assert 0 <= summary["shadow_copies_compared"] + summary["shadow_copies_dropped"] <= 5
    assert summary["shadow_copy_failures"] == 0 and summary["shadow_percent"] == 10
    # The per-stage breakdown: every stage of each path, the handler's inside the served
    # paths' totals.
    stages = {path: {row["stage"]: row["p50_ms"] for row in rows}
              for path, rows in report["breakdown"].items() if path != "requests"}
    assert len(stages["gateway"]) == 12 and len(stages["torchserve"]) == 6
    assert 0 < stages["gateway"]["handler inference"] < stages["gateway"]["total seen by the client"]
    assert 0 < stages["torchserve"]["handler inference"] < stages["torchserve"]["total seen by the client"]
    # CPU per image by process, for each int8/fp32 mode and concurrency.
    cpu = report["cpu_ms_per_image"]
    assert set(cpu) == {f"{m}, c={c}" for m in ("in-process", "in-process-int8", "gateway",
                                                 "gateway-int8") for c in (1, 2)}
    assert cpu["gateway, c=2"]["gateway"] > 0 and cpu["gateway, c=2"]["TorchServe model worker"] > 0
    assert cpu["in-process, c=2"]["bench process"] > 0
    # Traces exported to a collector, side by side with export off, at each level.
    assert {(r["mode"], r["concurrency"]) for r in report["tracing"]} == {
        (m, c) for m in ("gateway", "gateway-traced") for c in (1, 2)}
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["tracing"])
    assert summary["traced_over_untraced_images_per_s_c2"] > 0
    assert summary["traced_spans_received"] > 0  # the collector got the traced gateway's
    # ES256 tokens against HS256, served side by side, and one verify of each.
    assert [r["mode"] for r in report["signing"]] == ["gateway", "gateway-es256"]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["signing"])
    assert a_figure(summary["es256_minus_hs256_p50_ms_c1"])
    assert summary["es256_verify_us"] > 0 and summary["hs256_verify_us"] > 0
    assert summary["remembered_verify_us"] > 0
    assert set(report["section_seconds"]) == {"set-up", "main table", "breakdown",
                                              "prediction log", "open inference protocol",
                                              "torchserve api", "tracing", "signing", "shadow", "int8",
                                              "database down"}
    # Every row into the outbox, PostgreSQL stopped, side by side with the database up.
    assert [r["mode"] for r in report["outage"]] == ["gateway", "gateway-db-down"]
    assert all(r["errors"] == 0 and r["images_per_s"] > 0 for r in report["outage"])
    assert summary["database_down_over_up_throughput_c2"] > 0
    assert summary["database_down_gateway_database_up"] == 0
    assert summary["database_down_gateway_outbox_rows"] >= 4  # its rows, waiting
    # #30's and #42's goals, each a figure beside its target.
    assert len(report["goals"]) == 6
    assert all(a_figure(g["figure"]) for g in report["goals"].values()), report["goals"]
    assert (tmp_path / "bench.png").stat().st_size > 1000


@pytest.mark.timeout(REPLICAS_S + 60)
def test_hop_bench_smoke(tmp_path):
    """`make bench`'s hop section: the instant model, every path, two levels."""
    report = run_bench("hop", "hop.json", tmp_path, REPLICAS_S, "--requests", "6", "--rounds", "2",
                       "--concurrency", "1,4")
    assert {(r["mode"], r["concurrency"]) for r in report["results"]} == {
        (m, c) for m in ("torchserve", "predict", "oip", "ts-api") for c in (1, 4)}
    assert all(r["errors"] == 0 and r["requests"] == 6 for r in report["results"])
    cpu = report["cpu_ms_per_request"]
    assert cpu["predict, c=4"]["gateway"] > 0 and cpu["torchserve, c=4"]["TorchServe Java frontend"] > 0
    assert report["summary"]["predict_requests_per_gateway_core_c4"] > 0
    assert len(report["goals"]) == 3
    assert all(a_figure(g["figure"]) for g in report["goals"].values()), report["goals"]


@pytest.mark.timeout(OVERLOAD_S + 60)
def test_overload_bench_smoke(tmp_path):
    """`make bench-overload`'s harness, its three modes with short crowds."""
    report = run_bench("overload", "overload.json", tmp_path, OVERLOAD_S, "--seconds", "3",
                       "--concurrency", "2,24", "--victim", "1", "--max-inflight-per-user", "2")
    assert {mode: [(r["concurrency"], r["polite"]) for r in rows]
            for mode, rows in report["rows"].items()} == {
        "polite": [(2, True), (24, True)], "impolite": [(2, True), (24, False)],
        "fairness": [(1, True), (1, True), (24, False)]}
    rows = [r for mode_rows in report["rows"].values() for r in mode_rows]
    assert all(r["failed"] == 0 and r["served"] > 0 for r in rows) and report["failed"] == 0
    # 24 clients against 16 slots, 2 per user: the crowds past capacity were refused.
    assert report["rows"]["impolite"][1]["shed"] > 0 and report["rows"]["fairness"][2]["shed"] > 0
    # and each refusal's own time in the gateway was taken apart.
    assert {"auth", "quota", "log", "app"} <= set(report["rows"]["impolite"][1]["shed_stages_p50_ms"])
    assert len(report["goals"]) == 7
    assert all(a_figure(g["figure"]) for g in report["goals"].values()), report["goals"]


@pytest.mark.timeout(REPLICAS_S + 60)
def test_replicas_bench_smoke(tmp_path):
    """`make bench-replicas`' harness, one round on two replicas."""
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    report = run_bench("replicas", "replicas.json", tmp_path, REPLICAS_S, "--rounds", "1")
    assert report["replicas"] == 2 and len(report["first_ready_wait_s"]) == 2
    assert all(len(runs) == 1 for runs in report["runs"].values()), report["runs"]


@pytest.mark.timeout(REPLICAS_S + 60)
def test_signing_bench_smoke(tmp_path):
    """`make bench-signing`'s harness, one round on the ResNet-18 archive."""
    report = run_bench("signing", "signing.json", tmp_path, REPLICAS_S, "--archs", "resnet18",
                       "--rounds", "1")
    figures = report["archives"]["resnet18"]
    assert figures["size_bytes"] > 40_000_000
    assert all(len(runs) == 1 and runs[0] > 0 for runs in figures["runs"].values()), figures
    assert a_figure(figures["verified_push_over_unverified"])


@pytest.mark.timeout(REPLICAS_S + 60)
def test_log_lifecycle_bench_smoke(tmp_path):
    """`make bench-log`'s harness on 2,000 rows."""
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    report = run_bench("log_lifecycle", "log-lifecycle.json", tmp_path, REPLICAS_S,
                       "--rows", "2000")
    for figures in report.values():
        assert figures["rows"] == 2000 and figures["purged"] == 1000, figures
        assert figures["export_rows_per_s"] > 0 and figures["usage_day_s"] >= 0
