"""Model replicas (TorchServe and its agent, each on a store of its own that starts
empty), one real PostgreSQL, HAProxy between the gateway and the replicas' inference
ports as a Kubernetes Service is, and the gateway: for the tests of declared state
across replicas. The tests play the endpoints controller: a replica joins the balancer
once its readiness probe passes, and leaves it when it is killed."""

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from core.database import schema
from devstack.backends import HAProxy, Postgres, postgres_available, required_or_skip
from devstack.servers import GatewayServer, ReplicaServer


class Fleet:
    def __init__(self, base, model_store, database_url):
        self.base, self.model_store, self.database_url = base, model_store, database_url
        self.replicas: list[ReplicaServer] = []
        self.balancer = HAProxy(base)

    def add_replica(self) -> ReplicaServer:
        replica_id = f"replica-{len(self.replicas) + 1}"
        replica = ReplicaServer(self.model_store, self.base / replica_id, self.database_url,
                                replica_id)
        self.replicas.append(replica)
        replica.start()
        return replica

    def route_to_ready(self):
        self.balancer.set_backends([r.inference_port for r in self.replicas if r.running()])

    def stop(self):
        self.balancer.stop()
        for replica in self.replicas:
            replica.stop()


def served(replica: ReplicaServer, model: str = "classifier") -> tuple[str, dict]:
    """(default version, {version: READY workers}) of the model, from the replica's own
    management API."""
    url = f"{replica.management_url}/models/{model}"
    described = requests.get(f"{url}/all", timeout=10).json()
    default = requests.get(url, timeout=10).json()
    return default[0]["modelVersion"], {
        d["modelVersion"]: sum(w["status"] == "READY" for w in d["workers"]) for d in described}


@contextmanager
def running_fleet(base: Path, model_store: Path, replicas: int = 2,
                  **gateway_settings) -> Iterator[tuple[Fleet, GatewayServer]]:
    """`replicas` ready replicas behind the balancer, and a gateway on them."""
    required_or_skip(postgres_available(), "PostgreSQL (initdb, pg_ctl)")
    required_or_skip(shutil.which("haproxy") is not None, "haproxy")
    postgres = Postgres().start()
    fleet = Fleet(base, model_store, postgres.url)
    gateway = None
    try:
        schema.upgrade(postgres.url)
        for _ in range(replicas):
            fleet.add_replica()
        for replica in fleet.replicas:
            replica.wait_ready()
        fleet.balancer.start([r.inference_port for r in fleet.replicas])
        gateway = GatewayServer(fleet.balancer, base / "gateway", database_url=postgres.url,
                                model_store=model_store, **gateway_settings)
        gateway.start()
        gateway.wait_up()
        yield fleet, gateway
    finally:
        if gateway is not None:
            gateway.stop()
        fleet.stop()
        postgres.stop()
