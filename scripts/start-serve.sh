#!/usr/bin/env bash
# One model replica in the foreground: TorchServe (scripts/start-torchserve.sh) and its
# model agent beside it (python -m agent), which fills AGENT_STORE from the
# database and makes TorchServe serve the declared versions. Used by `make run`, the
# serve image and Compose; in Kubernetes the two are containers of one pod.
# When either ends, the other is stopped too, so the supervisor restarts the replica.
#
# The agent's settings (docs/model-versions.md): DATABASE_URL, AGENT_STORE,
# AGENT_STATE_FILE, REPLICA_ID, MODEL_STORE and MODEL_SEED; TorchServe's: TS_*.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export AGENT_STORE="${AGENT_STORE:-$here/run/agent-store}"
export TORCHSERVE_MANAGEMENT_URL="http://127.0.0.1:${TS_MANAGEMENT_PORT:-8081}"
mkdir -p "$AGENT_STORE"

TS_MODEL_STORE="$AGENT_STORE" "$here/scripts/start-torchserve.sh" &
torchserve=$!
(cd "$here" && exec python -m agent) &
agent=$!
stop() { kill -TERM "$torchserve" "$agent" 2>/dev/null || true; }
trap stop TERM INT
wait -n "$torchserve" "$agent" || true
stop
wait
