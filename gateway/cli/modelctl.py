"""Operator CLI for model versions: changes the declared state in the database
(DATABASE_URL), which every replica's model agent follows.

    modelctl list                       # versions and replicas
    modelctl push path/to/classifier-2.0.mar   # with classifier-2.0.mar.sig beside it
    modelctl register classifier-2.0.mar    # MODEL_STORE's, or pushed
    modelctl promote 2.0
    modelctl rollback [--to 1.0]        # the previous default (by the history), or 1.0
    modelctl unregister 2.0
    modelctl scale 2.0 --min 2 [--max 4]    # TorchServe workers per replica
    modelctl --model resnet18 list      # another model (default: MODEL_NAME)
    modelctl rollout 2.0 --percent 10 [--mode canary|shadow] [--sticky]
                                                [--max-p95-ratio 1.5] [--min-requests 50] ...
    modelctl rollout-status | rollout-promote | rollout-abort
    modelctl history [--limit 20]       # the model's changes, newest first
    modelctl verify-history             # every model's history: its hash chain holds

Changes wait up to VERSION_WAIT_SECONDS for every live replica; exit status 3 means
declared but not yet served everywhere (the output says where not), 4 declared but no
live replica can load it (the output says why); verify-history exits 5 when the chain
is broken. Rollouts live in
the same database, which every gateway process reads at most a second late. The older
names `canary` (with `--shadow` for `--mode shadow`), `canary-status`, `canary-promote`
and `canary-abort` still work.
"""

import argparse
import getpass
import json
import sys
from pathlib import Path

from core.database.engine import database_engine
from core.errors import ApiError
from core.model_history import Actor, ModelHistory
from core.settings import Settings, cli_settings
from core.signatures import SIGNATURE_SUFFIX, signature_beside
from gateway.models.rollouts.control import RolloutControl
from gateway.models.rollouts.guard import Guard
from gateway.models.rollouts.state import MODES
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import Models

ROLLOUT_COMMANDS = {"rollout": "start", "rollout-status": "status",
                    "rollout-promote": "promote", "rollout-abort": "abort"}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="modelctl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", dest="database_url",
                        help=f"default: DATABASE_URL or {Settings.database_url}")
    parser.add_argument("--model", dest="model_name",
                        help=f"default: MODEL_NAME or {Settings.model_name}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list")
    push = sub.add_parser("push", help="store an archive file in the database")
    push.add_argument("file", type=Path)
    push.add_argument("--version", help="the version it holds, where its name is not "
                      "<model>-<version>.mar")
    push.add_argument("--signature", type=Path,
                      help=f"its signature file (default: FILE{SIGNATURE_SUFFIX}, if there is one)")
    sub.add_parser("register").add_argument("archive")
    sub.add_parser("promote").add_argument("version")
    sub.add_parser("unregister").add_argument("version")
    sub.add_parser("rollback", help="to the previous default, by the model's history"
                   ).add_argument("--to", dest="to", help="this version instead")
    sub.add_parser("history", help="the model's changes, newest first").add_argument(
        "--limit", type=int, default=20)
    sub.add_parser("verify-history", help="every model's history: its hash chain holds")
    scale = sub.add_parser("scale", help="the version's TorchServe workers on every replica")
    scale.add_argument("version")
    scale.add_argument("--min", dest="min_workers", type=int, required=True)
    scale.add_argument("--max", dest="max_workers", type=int)
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
    given = {name: getattr(args, name) for name in ("database_url", "model_name")
             if getattr(args, name) is not None}
    settings = cli_settings(**given)
    engine = database_engine(settings.database_url)
    versions = Models(settings, engine).versions(settings.model_name, known=False)
    command = args.command.replace("canary", "rollout")
    actor = Actor(f"modelctl ({getpass.getuser()})")
    history = ModelHistory(engine)
    status = 200
    try:
        if command in ROLLOUT_COMMANDS:
            control = RolloutControl(RolloutStore(engine, settings.model_name), versions)
            result = _rollout_command(ROLLOUT_COMMANDS[command], args, control, actor)
        elif command == "list":
            result = versions.overview()
        elif command == "history":
            result = [r.shown() for r in history.page(settings.model_name, args.limit)]
        elif command == "verify-history":
            check = history.verify()
            result, status = vars(check), 200 if check.ok else 409
        elif command == "push":
            signature = (args.signature.read_text() if args.signature
                         else signature_beside(args.file))
            with open(args.file, "rb") as f:
                result = versions.push(f, args.file.name, actor, settings.max_archive_bytes,
                                       args.version, signature)
        elif command == "register":
            result, status = versions.register(args.archive, actor)
        elif command == "rollback":
            result, status = versions.rollback(actor, args.to)
        elif command == "scale":
            result, status = versions.scale(args.version, args.min_workers,
                                            args.max_workers or args.min_workers, actor)
        else:
            result, status = getattr(versions, command)(args.version, actor)
    except (ApiError, OSError) as exc:
        print(f"error ({getattr(exc, 'status', 'file')}): {getattr(exc, 'detail', exc)}",
              file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2, default=str))
    return {202: 3, 422: 4, 409: 5}.get(status, 0)


def _rollout_command(action: str, args, control: RolloutControl, actor: Actor) -> dict:
    if action == "start":
        guard = {name: getattr(args, name) for name in Guard.__dataclass_fields__
                 if getattr(args, name) is not None}
        return control.start({"version": args.version, "percent": args.percent,
                              "sticky": args.sticky, "mode": args.mode, "guard": guard}, actor)
    if action == "status":
        return control.status()
    return getattr(control, action)(actor)


if __name__ == "__main__":
    sys.exit(main())
