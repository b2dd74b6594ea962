"""Operator CLI for model versions, straight to TorchServe's management API on loopback.

    python -m gateway.modelctl list
    python -m gateway.modelctl register resnet18-2.0.mar
    python -m gateway.modelctl promote 2.0
    python -m gateway.modelctl rollback          # newest version older than the default
    python -m gateway.modelctl unregister 2.0
"""

import argparse
import json
import sys

from gateway.errors import ApiError
from gateway.model_versions import ModelVersions
from gateway.settings import Settings, SettingsError
from gateway.torchserve_client import TorchServeClient


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.modelctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--management-url", dest="torchserve_management_url",
                        help="default: TORCHSERVE_MANAGEMENT_URL or "
                             f"{Settings.torchserve_management_url}")
    parser.add_argument("--model", dest="model_name",
                        help=f"default: MODEL_NAME or {Settings.model_name}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    sub.add_parser("register").add_argument("archive")
    sub.add_parser("promote").add_argument("version")
    sub.add_parser("unregister").add_argument("version")
    sub.add_parser("rollback")
    args = parser.parse_args(argv)
    given = {name: getattr(args, name) for name in ("torchserve_management_url", "model_name")
             if getattr(args, name) is not None}
    try:
        settings = Settings.from_env(require_secret=False, **given)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    versions = ModelVersions(TorchServeClient(settings))
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
