#!/usr/bin/env python3
"""Exit 0 when TorchServe's default version of a model has a READY worker.

TorchServe's /ping says Healthy while workers crash, so readiness asks the
management API instead. Standard library only: runs in every image.

    model_ready.py [--url http://127.0.0.1:8081] [--model resnet18] [--wait SECONDS]
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def default_version_ready(url: str, model: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/models/{model}", timeout=3) as resp:
            versions = json.load(resp)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"management API unreachable: {exc}"
    if not versions:
        return False, f"{model} is not registered"
    default = versions[0]  # GET /models/{name} describes the default version only
    ready = [w for w in default.get("workers", []) if w.get("status") == "READY"]
    if ready:
        return True, f"{model} {default.get('modelVersion')}: {len(ready)} READY worker(s)"
    return False, f"{model} {default.get('modelVersion')}: no READY worker"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        ok, reason = default_version_ready(args.url, args.model)
        if ok or time.monotonic() >= deadline:
            print(reason, file=sys.stderr)
            return 0 if ok else 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
