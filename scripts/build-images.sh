#!/usr/bin/env bash
# `make images`: build both images with docker or podman, under the tags that
# docker-compose.yaml, k8s/ and `make deploy` use, then print their sizes.
#   IMAGE_WEIGHTS   weights baked into the serve image: imagenet (default), random, auto
#   IMAGE_TAG       tag of both images (1.0)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
engine="$("$here/scripts/container-engine.sh")"
tag="${IMAGE_TAG:-1.0}"
# podman writes OCI images by default, which drop HEALTHCHECK; the docker format keeps it.
format=()
[[ $engine == podman ]] && format=(--format docker)
build() {  # NAME DOCKERFILE [BUILD ARGS...]
  local name=$1 file=$2 start=$SECONDS
  shift 2
  echo "building $name:$tag with $engine ..."
  "$engine" build "${format[@]}" -t "$name:$tag" -f "$here/$file" "$@" "$here" >&2
  echo "built $name:$tag in $((SECONDS - start)) s"
}
build image-classifier-gateway Dockerfile.gateway
build image-classifier-serve Dockerfile.serve --build-arg "WEIGHTS=${IMAGE_WEIGHTS:-imagenet}"
"$engine" images --format '{{.Repository}}:{{.Tag}} {{.Size}}' | grep -E 'image-classifier-(serve|gateway)'
