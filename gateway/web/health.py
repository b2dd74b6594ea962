"""The operational endpoints: the index, liveness, readiness (gateway.predictions.readiness: a
live replica serves the default version, the prediction log takes rows; with or without
the database) and GET /metrics (this process's, or every worker process's, and the model
replicas' as reported to the database)."""

from flask import Blueprint, Response
from prometheus_client import (CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest,
                               multiprocess)
from sqlalchemy.exc import SQLAlchemyError

from gateway.metrics import FleetCollector, forget_dead_processes
from gateway.web.extension import services

bp = Blueprint("health", __name__)


@bp.get("/")
def index():
    return {
        "name": "image-classifier-gateway",
        "model": services().settings.model_name,
        "links": {"docs": "/docs", "openapi": "/openapi.json", "token": "/token",
                  "predict": "/predict", "health": "/healthz", "ready": "/readyz"},
    }


@bp.get("/healthz")
def healthz():
    return {"status": "ok"}


@bp.get("/readyz")
def readyz():
    return services().readiness()


@bp.get("/metrics")
def metrics():
    """Every worker process's samples, aggregated, when PROMETHEUS_MULTIPROC_DIR is set."""
    if directory := services().settings.prometheus_multiproc_dir:
        forget_dead_processes(directory)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    fleet = CollectorRegistry()
    fleet.register(FleetCollector(services().models))
    try:
        fleet_text = generate_latest(fleet)
    except SQLAlchemyError:  # the database is down: the process's own metrics still go out
        fleet_text = b""
    return Response(generate_latest(registry) + fleet_text, mimetype=CONTENT_TYPE_LATEST)
