#!/usr/bin/env bash
# `make run`: the database's schema, one model replica (TorchServe and its model agent:
# scripts/start-serve.sh) in the background, a wait until it serves the declared
# default, then the gateway in the foreground on localhost:8000. Ctrl-C stops both.
# A replica that exits while it is waited for fails the run at once, with its log's end.
# With PREDICTION_LOG_RETENTION_DAYS set above 0, the prediction log's purge runs
# beside them every hour (log: run/purge.out).
# Paths are the defaults' (run/, model_store/) unless the environment names others.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
serve_log="${SERVE_LOG:-run/serve.out}"
mkdir -p run "$(dirname "$serve_log")"
gateway-db upgrade
scripts/start-serve.sh >"$serve_log" 2>&1 &
serve=$!
purge=
if [ "${PREDICTION_LOG_RETENTION_DAYS:-0}" != 0 ]; then
  gateway-db purge --every 3600 >>run/purge.out 2>&1 &
  purge=$!
fi
trap 'kill -TERM "$serve" $purge 2>/dev/null; wait "$serve" $purge 2>/dev/null || true' EXIT
echo "Model replica starting (logs: $serve_log, run/torchserve/logs/) ..."
if ! replica-ready --url "http://127.0.0.1:${TS_MANAGEMENT_PORT:-8081}" \
     --agent-state "${AGENT_STATE_FILE:-run/agent-state.json}" --wait 300 --while-pid "$serve"; then
  echo "The model replica is not serving. The end of $serve_log:" >&2
  tail -n 40 "$serve_log" >&2 || true
  exit 1
fi
echo "Gateway on http://${GATEWAY_BIND:-127.0.0.1:8000} (docs: /docs). Ctrl-C stops both."
scripts/start-gateway.sh
