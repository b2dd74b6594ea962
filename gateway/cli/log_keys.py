"""The prediction log's keys file (PREDICTION_LOG_KEYS_FILE, gateway.prediction_log.privacy).

    gateway-log-keys new-key FILE   # add a key to a keys file; new rows use it
"""

import argparse
import sys

from gateway.prediction_log.privacy import PrivacyError, new_key


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-log-keys", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("new-key", help="add a key and make it current").add_argument("file")
    args = parser.parse_args(argv)
    try:
        kid = new_key(args.file)
    except PrivacyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"new rows are keyed with {kid}; restart the gateways to use it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
