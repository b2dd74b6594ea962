#!/usr/bin/env bash
# Start TorchServe in the foreground with config/config.properties plus the
# per-deployment settings below. Used by scripts/start-serve.sh (with its model agent),
# the Kubernetes pod and the tests.
#
#   TS_BIND_HOST        address the inference and metrics APIs listen on  (127.0.0.1)
#   TS_INFERENCE_PORT   inference API                       (8080)
#   TS_MANAGEMENT_PORT  management API, on loopback always  (8081)
#   TS_METRICS_PORT     Prometheus metrics                  (8082)
#   TS_GRPC_PORTS       gRPC inference,management (loopback only)  (7070,7071)
#   TS_MODEL_STORE      directory of .mar files             (./run/agent-store)
#   TS_LOAD_MODELS      archives loaded at start            (none: the model agent loads)
#   TS_RUN_DIR          logs, temp files, generated config  (./run/torchserve)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
host="${TS_BIND_HOST:-127.0.0.1}"
store="${TS_MODEL_STORE:-$here/run/agent-store}"
mkdir -p "$store"
store="$(cd "$store" && pwd)"
run_dir="${TS_RUN_DIR:-$here/run/torchserve}"
TS_GRPC_PORTS="${TS_GRPC_PORTS:-7070,7071}"
mkdir -p "$run_dir/logs" "$run_dir/tmp"
run_dir="$(cd "$run_dir" && pwd)"

if ! command -v java >/dev/null 2>&1; then
  echo "error: TorchServe needs Java 11+ and 'java' is not on PATH." >&2
  echo "       Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless" >&2
  exit 1
fi

config="$run_dir/config.properties"
{
  cat "$here/config/config.properties"
  echo "inference_address=http://$host:${TS_INFERENCE_PORT:-8080}"
  # Only the model agent beside TorchServe changes what it serves: on loopback.
  echo "management_address=http://127.0.0.1:${TS_MANAGEMENT_PORT:-8081}"
  echo "metrics_address=http://$host:${TS_METRICS_PORT:-8082}"
  echo "grpc_inference_port=${TS_GRPC_PORTS%%,*}"
  echo "grpc_management_port=${TS_GRPC_PORTS##*,}"
  echo "model_store=$store"
  # Only archives inside the model store; never http(s) (CVE-2023-43654).
  echo "allowed_urls=file://$store/[^/]*[.]mar"
  if [ -n "${TS_LOAD_MODELS:-}" ]; then echo "load_models=$TS_LOAD_MODELS"; fi
} >"$config"

# TorchServe keeps its pid file in the temp dir; a private one lets several
# instances (make run, tests) live side by side.
export TMPDIR="$run_dir/tmp" TEMP="$run_dir/tmp"
# Idle torch (OpenMP) threads spin briefly, then sleep: long enough to bridge the
# gaps between a forward pass's operators (PASSIVE, no spin, is slower: bench/HISTORY.md, "What each change did"),
# short enough not to burn the cores that the Java frontend and the gateway need
# (libgomp's default spins ~30x longer). Measured in bench/HISTORY.md, "What each change did".
export GOMP_SPINCOUNT="${GOMP_SPINCOUNT:-10000}"
export LOG_LOCATION="$run_dir/logs" METRICS_LOCATION="$run_dir/logs"
cd "$run_dir"

# The torchserve launcher does not forward signals to the Java frontend it starts:
# stop it explicitly so `docker stop`, Kubernetes and the tests shut down cleanly.
stop() { torchserve --stop --foreground >/dev/null 2>&1 || true; }
trap stop TERM INT
torchserve --start --foreground --ncs --ts-config "$config" --model-store "$store" \
  --log-config "$here/config/log4j2.xml" &
launcher=$!
wait "$launcher" || true
wait "$launcher" 2>/dev/null || true
