#!/usr/bin/env bash
# Start the gateway under gunicorn. Used by `make run`, the tests and Dockerfile.gateway.
# Settings come from the environment (docs/configuration.md); JWT_KEYS_FILE or JWT_SECRET is required.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
# Every gunicorn worker writes its metric samples here, and one scrape sums them all;
# prometheus_client reads it from the environment when it is imported.
export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-$(mktemp -d -t gateway-metrics-XXXXXX)}"
exec gunicorn --config "$here/config/gunicorn.conf.py" gateway.wsgi:app
