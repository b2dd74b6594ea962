"""The token signing keys' command line (gateway.identity.keys).

    gateway-keys list              # each key: id, age, signing or until when it verifies
    gateway-keys rotate            # a new key signs from now on
    gateway-keys rotate --after 120   # published now, signs in 2 min (replicas)
    gateway-keys retire            # drop keys whose every token has expired
    gateway-keys retire KID        # drop one key now (compromised): its tokens fail
    gateway-keys ensure            # a first key if the file has none (make run)
"""

import argparse
import sys
import time
from datetime import datetime, timezone

from core.settings import cli_settings
from gateway.identity.keys import KeyFileError, KeyRing


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", help="default: JWT_KEYS_FILE")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="each key's id, creation and state")
    rotate = sub.add_parser("rotate", help="a new key signs from now on, or from --after")
    rotate.add_argument("--after", type=float, default=0.0, metavar="SECONDS",
                        help="publish the new key now, sign with it this much later")
    sub.add_parser("ensure", help="make a first key if the file has none")
    sub.add_parser("retire", help="drop expired keys, or one key now").add_argument(
        "kid", nargs="?")
    args = parser.parse_args(argv)
    settings = cli_settings()
    path = args.file or settings.jwt_keys_file
    if not path:
        print("error: name the keys file: --file or JWT_KEYS_FILE", file=sys.stderr)
        return 2
    ring = KeyRing(path, settings.jwt_ttl_seconds)
    try:
        if args.command == "rotate":
            key = ring.rotate(after=args.after)
            print(f"new signing key from {_when(key.signs_from)}: {key.kid}")
        elif args.command == "ensure":
            ring.ensure()
        elif args.command == "retire":
            for kid in ring.retire(args.kid):
                print(f"retired {kid}")
        else:
            keys = ring.current().keys if ring.path.exists() else ()
            now = time.time()
            for key in keys:
                state = (f"signs from {_when(key.signs_from)}" if key.signs_from > now else
                         "signing" if key.signed_until is None or now < key.signed_until else
                         f"verifies until {_when(key.verifies_until(ring.ttl))}")
                print(f"{key.kid}\tcreated {_when(key.created)}\t{state}")
    except (KeyFileError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
