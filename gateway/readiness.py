#!/usr/bin/env python3
"""The readiness rule, written once: the model's default version has a READY worker.

TorchServe's /ping says Healthy while workers crash, so readiness asks the management
API instead. Standard library only: the gateway's /readyz uses it, and the serve image
runs this file as its health check and Kubernetes probe.

    python gateway/readiness.py [--url http://127.0.0.1:8081] [--model classifier] [--wait SECONDS]
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def ready_workers(description: dict) -> list[dict]:
    """The READY workers in one version's description from the management API."""
    return [w for w in description.get("workers", []) if w.get("status") == "READY"]


def default_version_ready(described: list[dict], model: str) -> tuple[bool, str]:
    """The rule on `GET /models/{model}`'s answer, which describes the default version only."""
    if not described:
        return False, f"{model} has no default version"
    default = described[0]
    ready = len(ready_workers(default))
    state = f"{ready} READY worker(s)" if ready else "no READY worker"
    return ready > 0, f"{model} {default.get('modelVersion')}: {state}"


def check(url: str, model: str) -> tuple[bool, str]:
    try:
        with urllib.request.urlopen(f"{url}/models/{model}", timeout=3) as resp:
            described = json.load(resp)
    except urllib.error.HTTPError as exc:
        return False, f"{model}: management API answered {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return False, f"management API unreachable: {exc}"
    return default_version_ready(described, model)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8081")
    parser.add_argument("--model", default="classifier")
    parser.add_argument("--wait", type=float, default=0, help="keep trying this many seconds")
    args = parser.parse_args()
    deadline = time.monotonic() + args.wait
    while True:
        ok, reason = check(args.url, args.model)
        if ok or time.monotonic() >= deadline:
            print(reason, file=sys.stderr)
            return 0 if ok else 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
