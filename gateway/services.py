"""What every blueprint shares, and `services()`, the one way a request reaches it."""

from dataclasses import dataclass

from flask import current_app

from gateway.admission import Admission
from gateway.prediction_log import PredictionLog
from gateway.rollouts import Rollouts
from gateway.settings import Settings
from gateway.shadow import ShadowQueue
from gateway.torchserve_client import TorchServeClient
from gateway.users import UserStore

EXTENSION = "gateway"  # app.extensions key


@dataclass
class Services:
    settings: Settings
    users: UserStore
    torchserve: TorchServeClient
    admission: Admission  # the bound on predictions in flight
    prediction_log: PredictionLog | None  # None: PREDICTION_LOG=false
    rollouts: Rollouts | None  # they live in the prediction log's database
    shadow: ShadowQueue


def services() -> Services:
    """The current app's services (create_app puts them in app.extensions)."""
    return current_app.extensions[EXTENSION]
