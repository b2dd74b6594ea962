#!/usr/bin/env bash
# Start the gateway: granian serving the Flask app (gateway/serve.py). Used by `make run`,
# the tests and Dockerfile.gateway.
# Settings come from the environment (docs/configuration.md); JWT_KEYS_FILE or JWT_SECRET is required.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
# Every worker process writes its metric samples here, and one scrape sums them all;
# prometheus_client reads it from the environment when it is imported.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$(mktemp -d -t gateway-metrics-XXXXXX)}"
exec python -m gateway.serve
