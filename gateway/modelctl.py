"""Operator CLI for model versions, straight to TorchServe's management API on loopback.

    python -m gateway.modelctl list
    python -m gateway.modelctl register resnet18-2.0.mar
    python -m gateway.modelctl promote 2.0
    python -m gateway.modelctl rollback          # newest version older than the default
    python -m gateway.modelctl unregister 2.0
"""

import argparse
import json
import os
import sys

from gateway.errors import ApiError
from gateway.models import ModelVersions
from gateway.upstream import TorchServe


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.modelctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--management-url", default=os.environ.get(
        "TORCHSERVE_MANAGEMENT_URL", "http://127.0.0.1:8081"))
    parser.add_argument("--model", default=os.environ.get("MODEL_NAME", "resnet18"))
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    sub.add_parser("register").add_argument("archive")
    sub.add_parser("promote").add_argument("version")
    sub.add_parser("unregister").add_argument("version")
    sub.add_parser("rollback")
    args = parser.parse_args(argv)
    versions = ModelVersions(TorchServe("", args.management_url, args.model))
    try:
        if args.command == "list":
            result = versions.overview()
        elif args.command == "register":
            result = versions.register(args.archive)
        elif args.command == "rollback":
            result = versions.rollback()
        else:
            result = getattr(versions, args.command)(args.version)
    except ApiError as exc:
        print(f"error ({exc.status}): {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
