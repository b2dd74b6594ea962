"""Operator CLI for model versions, straight to TorchServe's management API on loopback.

    python -m gateway.modelctl list
    python -m gateway.modelctl register classifier-2.0.mar
    python -m gateway.modelctl promote 2.0
    python -m gateway.modelctl rollback          # newest version older than the default
    python -m gateway.modelctl unregister 2.0
    python -m gateway.modelctl canary 2.0 --percent 10 [--sticky] [--shadow] [--max-p95-ratio 1.5]
    python -m gateway.modelctl canary-status | canary-promote | canary-abort

Canary and shadow rollouts live in the prediction log's database (DATABASE_URL), which
every gateway process reads at most a second late.
"""

import argparse
import json
import sys

from gateway.errors import ApiError
from gateway.model_versions import ModelVersions
from gateway.prediction_log import create_log_engine
from gateway.rollouts import Guard, RolloutControl, Rollouts
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
    canary = sub.add_parser("canary", help="start a canary (or --shadow), or change its share")
    canary.add_argument("version")
    canary.add_argument("--percent", type=float, required=True)
    canary.add_argument("--sticky", action="store_true", help="keep each user on one arm")
    canary.add_argument("--shadow", action="store_true", help="copy instead of divert")
    for field in Guard.__dataclass_fields__.values():
        canary.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                            type=int if field.name == "min_requests" else float,
                            help=f"guard (default {field.default})")
    sub.add_parser("canary-status")
    sub.add_parser("canary-promote")
    sub.add_parser("canary-abort")
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
        if args.command.startswith("canary"):
            result = _rollout_command(args, RolloutControl(
                Rollouts(create_log_engine(settings.database_url), settings.model_name),
                versions))
        elif args.command == "list":
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


def _rollout_command(args, control: RolloutControl) -> dict:
    if args.command == "canary":
        guard = {name: getattr(args, name) for name in Guard.__dataclass_fields__
                 if getattr(args, name) is not None}
        return control.start({"version": args.version, "percent": args.percent,
                              "sticky": args.sticky,
                              "mode": "shadow" if args.shadow else "canary", "guard": guard})
    if args.command == "canary-promote":
        return control.promote()
    if args.command == "canary-abort":
        return control.abort()
    return control.status()


if __name__ == "__main__":
    sys.exit(main())
