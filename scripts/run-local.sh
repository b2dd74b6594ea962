#!/usr/bin/env bash
# `make run`: TorchServe in the background, wait until the model has a READY
# worker, then the gateway in the foreground on localhost:8000. Ctrl-C stops both.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mkdir -p "$here/run"
"$here/scripts/start-torchserve.sh" >"$here/run/torchserve.out" 2>&1 &
ts_pid=$!
trap 'kill -TERM "$ts_pid" 2>/dev/null; wait "$ts_pid" 2>/dev/null || true' EXIT
echo "TorchServe starting (logs: run/torchserve/logs/) ..."
python "$here/gateway/readiness.py" --url "${TORCHSERVE_MANAGEMENT_URL:-http://127.0.0.1:8081}" --wait 180
echo "Gateway on http://${GATEWAY_BIND:-127.0.0.1:8000} (docs: /docs). Ctrl-C stops both."
"$here/scripts/start-gateway.sh"
