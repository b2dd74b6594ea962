"""What every blueprint shares (`Services`, built once by the app factory) and
`services()`, the one way a request reaches it."""

from dataclasses import dataclass

from flask import current_app
from limits.strategies import RateLimiter

from gateway.admission import Admission
from gateway.erasures import Erasures
from gateway.log_privacy import LogPrivacy
from gateway.model_versions import ModelVersions
from gateway.pipeline import PredictionPipeline
from gateway.prediction_log import PredictionLog, create_log_engine
from gateway.quota import Quota
from gateway.rollouts.store import RolloutStore
from gateway.served_model import HandlerConfig
from gateway.settings import Settings
from gateway.shadow import ShadowQueue
from gateway.tokens import Tokens
from gateway.torchserve_client import TorchServeClient
from gateway.users import UserStore

EXTENSION = "gateway"  # app.extensions key


@dataclass(frozen=True)
class Services:
    settings: Settings
    users: UserStore
    tokens: Tokens  # ours (signing keys) and trusted OpenID providers'
    torchserve: TorchServeClient
    handler: HandlerConfig  # the served model's batch size and top-k
    versions: ModelVersions  # declared in the database, served by every replica
    prediction_log: PredictionLog | None  # None: PREDICTION_LOG=false
    privacy: LogPrivacy  # what its rows keep of users and file names
    erasures: Erasures
    rollouts: RolloutStore | None  # they live in the prediction log's database
    pipeline: PredictionPipeline

    @classmethod
    def build(cls, settings: Settings, rate_limiter: RateLimiter) -> "Services":
        """Everything, from the settings and the rate-limit strategy (quotas share the
        login limits' storage)."""
        torchserve = TorchServeClient(settings)
        handler = HandlerConfig.read(settings.model_config_file)
        engine = create_log_engine(settings.database_url)
        versions = ModelVersions.from_settings(settings, engine, torchserve)
        prediction_log = PredictionLog(engine) if settings.prediction_log else None
        privacy = LogPrivacy.from_settings(settings)
        rollouts = RolloutStore(engine, settings.model_name) if prediction_log else None
        pipeline = PredictionPipeline(
            settings, torchserve, Admission(settings),
            Quota(rate_limiter, settings.predict_rate_limit), prediction_log, privacy, rollouts,
            ShadowQueue(settings.shadow_workers, settings.shadow_queue_size), handler.batch_size)
        return cls(settings, UserStore(settings.users_file), Tokens.from_settings(settings),
                   torchserve, handler, versions,
                   prediction_log, privacy, Erasures(engine, privacy, settings.jwt_ttl_seconds),
                   rollouts, pipeline)


def services() -> Services:
    """The current app's services (create_app puts them in app.extensions)."""
    return current_app.extensions[EXTENSION]
