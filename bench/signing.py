"""Archive signatures: what signing, verifying and a verified push cost, for a ResNet-18
(45 MB) and a ResNet-101 (170 MB) archive.

    python -m bench.signing [--archs resnet18,resnet101] [--rounds 3] [--out bench/results]

In-process: the archive's sha256 alone (what every push and agent load already
computes), signing it (modelbuild.signing) and verifying it (core.signatures, as the
gateway and every agent do). Through a real gateway (granian, SQLite): the same
archive pushed with its signature (verified) and without one (ALLOW_UNSIGNED_ARCHIVES:
not verified), taking turns, each push stored afresh under its own name.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import requests

from core.catalog import sha256_of
from core.database import schema
from core.signatures import ArchiveSignatures, signature_beside
from devstack.servers import ROOT, GatewayServer
from devstack.signing import signature_header, use_signing_key
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, signing_keys
from gateway.identity.users import UserStore
from modelbuild import archive, signing, weights

MODES = ("sha256_s", "sign_s", "verify_s", "push_signed_s", "push_unsigned_s")
VERIFY_OVER_SHA256_GOAL = 1.5  # bench/README.md, "make bench-signing"


def timed(call) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def pushed(gateway, admin: dict, path: Path, name: str, signed: bool) -> None:
    headers = {**admin, **(signature_header(path) if signed else {})}
    with open(path, "rb") as body:
        response = requests.post(gateway.url + "/models/classifier/archives", data=body,
                                 params={"filename": name, "version": "1.0"},
                                 headers=headers, timeout=600)
    if response.status_code != 201:
        raise RuntimeError(f"push {name}: {response.status_code} {response.text}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="resnet18,resnet101")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"rounds": args.rounds, "archives": {}}
    with tempfile.TemporaryDirectory(prefix="signing-") as tmp:
        tmp = Path(tmp)
        trusted = use_signing_key(tmp / "model-signing")
        key = signing.new_key(tmp / "model-signing")
        rule = ArchiveSignatures(str(trusted), allow_unsigned=False)
        users = tmp / "users.json"
        users.write_text((ROOT / "config" / "users.json").read_text())
        UserStore(users).set_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        database_url = f"sqlite:///{tmp / 'gateway.db'}"
        schema.upgrade(database_url)
        gateway = GatewayServer(SimpleNamespace(url="http://127.0.0.1:9"), tmp / "gateway",
                                jwt_keys_file=signing_keys(tmp / "jwt-keys.json"),
                                users_file=users, database_url=database_url,
                                allow_unsigned_archives="true", max_archive_bytes=1 << 30)
        with gateway.serving():
            admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
            for arch in args.archs.split(","):
                path = archive.build("1.0", weights.random_weights(0, arch), tmp / arch)
                runs = {mode: [] for mode in MODES}
                for n in range(args.rounds):
                    for mode, call in (
                            ("sha256_s", lambda: sha256_of(path)),
                            ("sign_s", lambda: signing.sign(path, key)),
                            ("verify_s", lambda: rule.check(path, signature_beside(path))),
                            ("push_signed_s", lambda: pushed(
                                gateway, admin, path, f"r{n}-signed-{path.name}", True)),
                            ("push_unsigned_s", lambda: pushed(
                                gateway, admin, path, f"r{n}-unsigned-{path.name}", False))):
                        runs[mode].append(round(timed(call), 3))
                median = {mode: statistics.median(values) for mode, values in runs.items()}
                report["archives"][arch] = {
                    "size_bytes": path.stat().st_size, "runs": runs, "median": median,
                    "verified_push_over_unverified": round(
                        median["push_signed_s"] / median["push_unsigned_s"], 3),
                    "verify_over_sha256": round(median["verify_s"] / median["sha256_s"], 3)}
    (args.out / "signing.json").write_text(json.dumps(report, indent=2))
    for arch, figures in report["archives"].items():
        print(f"{arch}: {figures['size_bytes'] / 1e6:.1f} MB; medians of {args.rounds} rounds: "
              + ", ".join(f"{mode} {value}" for mode, value in figures["median"].items())
              + f"; verified push / unverified {figures['verified_push_over_unverified']}; "
              f"goal verify / sha256 <= {VERIFY_OVER_SHA256_GOAL}: "
              f"{figures['verify_over_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
