#!/usr/bin/env bash
# Start the gateway under gunicorn. Used by `make run`, the tests and Dockerfile.gateway.
# Settings come from the environment (see the README); JWT_SECRET is required.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
exec gunicorn --config "$here/config/gunicorn.conf.py" gateway.wsgi:app
