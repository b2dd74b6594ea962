"""Model versions across replicas: how long an admin's register, promote and retire take
until every replica follows, and how long a replica on an empty disk takes to serve
every declared version.

    python -m bench.replicas [--replicas 2] [--rounds 3] [--out bench/results]

Real parts: PostgreSQL, REPLICAS model replicas (TorchServe and its agent, each on an
empty store), one gateway. Each round registers 2.0 (the answer comes once every
replica has a READY worker for it), promotes it, promotes 1.0 back and retires 2.0.
"""

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests

from core.database import schema
from devstack.backends import Postgres
from devstack.servers import ROOT, GatewayServer, ReplicaServer
from devstack.signing import use_signing_key
from devstack.stack import ADMIN_PASSWORD, ADMIN_USER, get_token, signing_keys
from gateway.identity.users import UserStore
from modelbuild import archive, weights

MODELS = "/models/classifier"


def timed(call) -> tuple[float, requests.Response]:
    started = time.perf_counter()
    response = call()
    response.raise_for_status()
    if response.status_code == 202:
        raise RuntimeError(f"not every replica followed in time: {response.text}")
    return time.perf_counter() - started, response


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    figures = {"register_s": [], "promote_s": [], "promote_back_s": [], "retire_s": []}
    with tempfile.TemporaryDirectory(prefix="replicas-") as tmp:
        tmp = Path(tmp)
        use_signing_key(tmp / "model-signing")  # its archives signed, its replicas trusting them
        for version, seed in (("1.0", 0), ("2.0", 1)):
            archive.build(version, weights.random_weights(seed), tmp / "store")
        users = tmp / "users.json"
        users.write_text((ROOT / "config" / "users.json").read_text())
        UserStore(users).set_user(ADMIN_USER, ADMIN_PASSWORD, "admin")
        postgres = Postgres().start()
        replicas, gateway = [], None
        try:
            schema.upgrade(postgres.url)
            started = time.perf_counter()
            replicas = [ReplicaServer(tmp / "store", tmp / f"replica-{n}", postgres.url,
                                      f"replica-{n}") for n in range(1, args.replicas + 1)]
            for replica in replicas:
                replica.start()
            first_ready = [replica.wait_ready() for replica in replicas]
            cold_start = time.perf_counter() - started
            gateway = GatewayServer(replicas[0], tmp / "gateway",
                                    jwt_keys_file=signing_keys(tmp / "jwt-keys.json"),
                                    users_file=users, database_url=postgres.url,
                                    model_store=tmp / "store")
            gateway.start()
            gateway.wait_up()
            admin = {"Authorization": f"Bearer {get_token(gateway, ADMIN_USER, ADMIN_PASSWORD)}"}
            url = gateway.url + MODELS
            for _ in range(args.rounds):
                for key, call in (
                        ("register_s", lambda: requests.post(
                            url + "/versions", json={"archive": "classifier-2.0.mar"},
                            headers=admin, timeout=600)),
                        ("promote_s", lambda: requests.put(
                            url + "/versions/2.0/default", headers=admin, timeout=600)),
                        ("promote_back_s", lambda: requests.put(
                            url + "/versions/1.0/default", headers=admin, timeout=600)),
                        ("retire_s", lambda: requests.delete(
                            url + "/versions/2.0", headers=admin, timeout=600))):
                    figures[key].append(round(timed(call)[0], 2))
        finally:
            if gateway is not None:
                gateway.stop()
            for replica in replicas:
                replica.stop()
            postgres.stop()
    report = {"replicas": args.replicas, "rounds": args.rounds,
              "cold_start_all_ready_s": round(cold_start, 1),
              "first_ready_wait_s": [round(s, 1) for s in first_ready], "runs": figures,
              "median": {key: statistics.median(values) for key, values in figures.items()}}
    (args.out / "replicas.json").write_text(json.dumps(report, indent=2))
    print(f"{args.replicas} replicas, empty stores, one PostgreSQL: all ready after "
          f"{report['cold_start_all_ready_s']} s")
    for key, values in figures.items():
        print(f"{key:>16}: median {report['median'][key]} s, runs {values}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
