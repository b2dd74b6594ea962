"""The users file's command line (gateway.identity.users).

    gateway-users add alice --role admin      # password from prompt or stdin
    gateway-users passwd alice
    gateway-users remove alice
    gateway-users list
    gateway-users add-admin admin             # generated password, printed once
    gateway-users revoke alice                # end every token alice holds
    gateway-users quota alice "60 per minute" # her /predict limit ("default" resets)
    gateway-users models team-b mobilenet     # limit her to these models ("all" resets)
    gateway-users erase alice                 # delete her prediction-log rows
    gateway-users add-client batch-job --scopes predict  # a service account:
                                                        # generated secret, printed once

`erase` deletes every prediction-log row of the user in DATABASE_URL's database, under
each name the log keeps (gateway.prediction_log.erasures), and ends their tokens.
"""

import argparse
import getpass
import secrets
import sys

from sqlalchemy.exc import SQLAlchemyError

from core.database.engine import database_engine
from core.settings import Settings, SettingsError, cli_settings
from gateway.identity.principals import ScopeError, parse_scopes
from gateway.identity.users import ROLES, UserError, UserStore
from gateway.prediction_log.erasures import Erasures
from gateway.prediction_log.privacy import LogPrivacy


def _read_password(confirm: bool = True) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    password = getpass.getpass("Password: ")
    if confirm and getpass.getpass("Repeat password: ") != password:
        raise UserError("passwords do not match")
    return password


def _erase(settings: Settings, username: str):
    engine = database_engine(settings.database_url)
    try:
        return Erasures(engine, LogPrivacy.from_settings(settings),
                        settings.jwt_ttl_seconds).erase(username, "cli")
    finally:
        engine.dispose()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="gateway-users", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", help=f"default: USERS_FILE or {Settings.users_file}")
    sub = parser.add_subparsers(dest="command", required=True)
    add = sub.add_parser("add", help="add or replace a user")
    add.add_argument("username")
    add.add_argument("--role", choices=ROLES, default="user")
    sub.add_parser("passwd", help="reset a password").add_argument("username")
    sub.add_parser("remove", help="delete a user").add_argument("username")
    sub.add_parser("list", help="list users, roles and /predict quotas")
    sub.add_parser("revoke", help="revoke every token the user holds").add_argument("username")
    quota = sub.add_parser("quota", help="set the user's /predict rate limit")
    quota.add_argument("username")
    quota.add_argument("limit", help='e.g. "60 per minute", or "default" for PREDICT_RATE_LIMIT')
    models = sub.add_parser("models", help="limit the user to some models")
    models.add_argument("username")
    models.add_argument("models", help='comma-separated model names, or "all"')
    sub.add_parser("erase", help="delete the user's prediction-log rows and end their tokens"
                   ).add_argument("username")
    client = sub.add_parser("add-client", help="add a service account (client credentials) "
                            "with a generated secret, or replace its secret and scopes")
    client.add_argument("client_id")
    client.add_argument("--scopes", required=True, help="e.g. 'predict predictions:read'")
    admin = sub.add_parser("add-admin", help="create an admin with a generated password")
    admin.add_argument("username", nargs="?", default="admin")
    args = parser.parse_args(argv)
    settings = cli_settings()
    store = UserStore(args.file or settings.users_file)
    try:
        if args.command == "add":
            store.set_user(args.username, _read_password(), args.role)
        elif args.command == "passwd":
            user = store.get(args.username)
            if user is None:
                raise UserError(f"no user {args.username!r}")
            store.set_user(user.username, _read_password(), user.role, user.scopes)
        elif args.command == "remove":
            store.remove(args.username)
        elif args.command == "revoke":
            store.revoke(args.username)
            print(f"revoked every token of {args.username!r} issued until now")
        elif args.command == "quota":
            store.set_quota(args.username, None if args.limit == "default" else args.limit)
        elif args.command == "models":
            store.set_models(args.username, None if args.models == "all"
                             else tuple(args.models.split(",")))
        elif args.command == "erase":
            erasure = _erase(settings, args.username)
            print(f"erased {erasure.rows_deleted} prediction-log rows of {args.username!r}; "
                  "their tokens are refused")
        elif args.command == "add-client":
            secret = store.set_client(args.client_id, parse_scopes(args.scopes))
            print(f"client {args.client_id!r} secret (shown once): {secret}")
        elif args.command == "add-admin":
            password = secrets.token_urlsafe(18)
            store.set_user(args.username, password, "admin")
            print(f"admin user {args.username!r} password (shown once): {password}")
        else:
            for user in store.all():
                print(f"{user.username}\t{user.role}\t{user.predict_rate_limit or 'default'}"
                      + (f"\t{' '.join(user.scopes)}" if user.scopes else "")
                      + (f"\tmodels: {','.join(user.models)}" if user.models is not None else ""))
    except (UserError, SettingsError, ScopeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except SQLAlchemyError as exc:
        print(f"error: the prediction log's database: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
