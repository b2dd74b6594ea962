"""What every blueprint shares: `Services`, built once by the app factory (the HTTP
adapters reach it through gateway.web.extension)."""

import time
from collections.abc import Callable
from dataclasses import dataclass

from limits.strategies import RateLimiter

from core.database.engine import database_engine
from core.model_history import ModelHistory
from core.served_model import HandlerConfig
from core.settings import Settings
from core.torchserve_client import TorchServeClient
from gateway.identity.tokens import Tokens
from gateway.identity.users import UserStore
from gateway.models.control_snapshot import ControlSnapshot, ControlState, ModelState
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import Models
from gateway.prediction_log.erasures import Erasures
from gateway.prediction_log.outbox import Outbox
from gateway.prediction_log.privacy import LogPrivacy
from gateway.prediction_log.store import PredictionLog
from gateway.prediction_log.writer import LogWriter
from gateway.predictions.admission import Admission
from gateway.predictions.pipeline import PredictionPipeline
from gateway.predictions.quota import Quota
from gateway.predictions.readiness import readiness
from gateway.predictions.shadow import ShadowQueue


@dataclass(frozen=True)
class Services:
    settings: Settings
    users: UserStore
    tokens: Tokens  # ours (signing keys) and trusted OpenID providers'
    torchserve: TorchServeClient
    handler: HandlerConfig  # our handler's batch size and top-k
    models: Models  # their versions, declared in the database, served by every replica
    history: ModelHistory  # every change to them
    prediction_log: PredictionLog | None  # None: PREDICTION_LOG=false
    log_writer: LogWriter | None  # its rows: the database, or the outbox while it is down
    privacy: LogPrivacy  # what its rows keep of users and file names
    erasures: Erasures
    # A model's rollouts; None without the prediction log (they live in its database).
    rollouts: Callable[[str], RolloutStore | None]
    snapshot: ControlSnapshot  # what predictions read from the database
    pipeline: PredictionPipeline

    def readiness(self, model: str | None = None, version: str | None = None) -> dict:
        """/readyz's rule (gateway.predictions.readiness), for a model (MODEL_NAME) and a
        version (its default)."""
        return readiness(self.torchserve, self.snapshot, self.log_writer,
                         model or self.settings.model_name, version)

    @classmethod
    def build(cls, settings: Settings, rate_limiter: RateLimiter) -> "Services":
        """Everything, from the settings and the rate-limit strategy (quotas share the
        login limits' storage)."""
        torchserve = TorchServeClient(settings)
        handler = HandlerConfig.read(settings.model_config_file)
        engine = database_engine(settings.database_url)
        models = Models(settings, engine)
        privacy = LogPrivacy.from_settings(settings)
        erasures = Erasures(engine, privacy, settings.jwt_ttl_seconds)
        prediction_log = writer = None
        if settings.prediction_log:
            prediction_log = PredictionLog(engine)
            writer = LogWriter(prediction_log, Outbox(
                settings.outbox_file, settings.outbox_max_rows, settings.outbox_max_age_seconds),
                erasures.erased_since)
            writer.start()

        def rollouts(name: str) -> RolloutStore | None:
            return RolloutStore(engine, name) if settings.prediction_log else None

        def model_state(name: str) -> ModelState:
            store = rollouts(name)
            return ModelState(name, *models.versions(name, known=False).serving(),
                              store.active() if store else None)

        snapshot = ControlSnapshot(lambda: ControlState(
            time.time(), {name: model_state(name) for name in models.names()},
            erasures.recent()), settings.control_snapshot_file)
        snapshot.start()  # so that a gateway never asked yet has one when the database goes
        pipeline = PredictionPipeline(
            settings, torchserve, Admission(settings),
            Quota(rate_limiter, settings.predict_rate_limit), writer, privacy,
            rollouts, snapshot, ShadowQueue(settings.shadow_workers, settings.shadow_queue_size),
            handler.batch_size)
        return cls(settings, UserStore(settings.users_file), Tokens.from_settings(settings),
                   torchserve, handler, models, ModelHistory(engine), prediction_log, writer,
                   privacy, erasures, rollouts, snapshot, pipeline)

