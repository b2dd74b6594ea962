"""Operator CLI for model versions, straight to TorchServe's management API on loopback.

    python -m gateway.modelctl list
    python -m gateway.modelctl register classifier-2.0.mar
    python -m gateway.modelctl promote 2.0
    python -m gateway.modelctl rollback          # newest version older than the default
    python -m gateway.modelctl unregister 2.0
    python -m gateway.modelctl rollout 2.0 --percent 10 [--mode canary|shadow] [--sticky]
                                                [--max-p95-ratio 1.5] [--min-requests 50] ...
    python -m gateway.modelctl rollout-status | rollout-promote | rollout-abort

Rollouts live in the prediction log's database (DATABASE_URL), which every gateway
process reads at most a second late. The older names `canary` (with `--shadow` for
`--mode shadow`), `canary-status`, `canary-promote` and `canary-abort` still work.
"""

import argparse
import json
import sys

from gateway.errors import ApiError
from gateway.model_versions import ModelVersions
from gateway.prediction_log import create_log_engine
from gateway.rollouts.control import RolloutControl
from gateway.rollouts.guard import Guard
from gateway.rollouts.state import MODES
from gateway.rollouts.store import RolloutStore
from gateway.settings import Settings, SettingsError
from gateway.torchserve_client import TorchServeClient

ROLLOUT_COMMANDS = {"rollout": "start", "rollout-status": "status",
                    "rollout-promote": "promote", "rollout-abort": "abort"}


def _parser() -> argparse.ArgumentParser:
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
    start = sub.add_parser("rollout", aliases=["canary"],
                           help="start a canary or shadow, or change the active one")
    start.add_argument("version")
    start.add_argument("--percent", type=float, required=True)
    start.add_argument("--mode", choices=MODES, default="canary",
                       help="canary: the candidate serves its share; shadow: gets copies")
    start.add_argument("--shadow", dest="mode", action="store_const", const="shadow",
                       help="the same as --mode shadow")
    start.add_argument("--sticky", action="store_true", help="keep each user on one arm")
    for field in Guard.__dataclass_fields__.values():
        start.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name,
                           type=int if field.name == "min_requests" else float,
                           help=f"guard (default {field.default})")
    for name in ("rollout-status", "rollout-promote", "rollout-abort"):
        sub.add_parser(name, aliases=[name.replace("rollout", "canary")])
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    given = {name: getattr(args, name) for name in ("torchserve_management_url", "model_name")
             if getattr(args, name) is not None}
    try:
        settings = Settings.from_env(require_secret=False, **given)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    versions = ModelVersions(TorchServeClient(settings))
    command = args.command.replace("canary", "rollout")
    try:
        if command in ROLLOUT_COMMANDS:
            control = RolloutControl(
                RolloutStore(create_log_engine(settings.database_url), settings.model_name),
                versions)
            result = _rollout_command(ROLLOUT_COMMANDS[command], args, control)
        elif command == "list":
            result = versions.overview()
        elif command == "register":
            result = versions.register(args.archive)
        elif command == "rollback":
            result = versions.rollback()
        else:
            result = getattr(versions, command)(args.version)
    except ApiError as exc:
        print(f"error ({exc.status}): {exc.detail}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2))
    return 0


def _rollout_command(action: str, args, control: RolloutControl) -> dict:
    if action == "start":
        guard = {name: getattr(args, name) for name in Guard.__dataclass_fields__
                 if getattr(args, name) is not None}
        return control.start({"version": args.version, "percent": args.percent,
                              "sticky": args.sticky, "mode": args.mode, "guard": guard})
    return getattr(control, action)()


if __name__ == "__main__":
    sys.exit(main())
