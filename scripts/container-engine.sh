#!/usr/bin/env bash
# Print the container engine to use: $CONTAINER_ENGINE if set, else docker when its
# daemon answers, else podman. Exit 1 with a message when there is none.
set -euo pipefail
if [[ -n ${CONTAINER_ENGINE:-} ]]; then echo "$CONTAINER_ENGINE"; exit 0; fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then echo docker; exit 0; fi
if command -v podman >/dev/null 2>&1; then echo podman; exit 0; fi
echo "no container engine: install Docker (or podman) first" >&2
exit 1
