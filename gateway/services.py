"""What every blueprint shares: `Services`, built once by the app factory (the HTTP
adapters reach it through gateway.web.extension)."""

import time
from dataclasses import dataclass

from limits.strategies import RateLimiter

from core.database.engine import database_engine
from core.served_model import HandlerConfig
from core.settings import Settings
from core.torchserve_client import TorchServeClient
from gateway.identity.tokens import Tokens
from gateway.identity.users import UserStore
from gateway.models.control_snapshot import ControlSnapshot, ControlState
from gateway.models.rollouts.store import RolloutStore
from gateway.models.versions import ModelVersions
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
    handler: HandlerConfig  # the served model's batch size and top-k
    versions: ModelVersions  # declared in the database, served by every replica
    prediction_log: PredictionLog | None  # None: PREDICTION_LOG=false
    log_writer: LogWriter | None  # its rows: the database, or the outbox while it is down
    privacy: LogPrivacy  # what its rows keep of users and file names
    erasures: Erasures
    rollouts: RolloutStore | None  # they live in the prediction log's database
    snapshot: ControlSnapshot  # what predictions read from the database
    pipeline: PredictionPipeline

    def readiness(self, version: str | None = None) -> dict:
        """/readyz's rule (gateway.predictions.readiness), for `version` or the default."""
        return readiness(self.torchserve, self.snapshot, self.log_writer, version)

    @classmethod
    def build(cls, settings: Settings, rate_limiter: RateLimiter) -> "Services":
        """Everything, from the settings and the rate-limit strategy (quotas share the
        login limits' storage)."""
        torchserve = TorchServeClient(settings)
        handler = HandlerConfig.read(settings.model_config_file)
        engine = database_engine(settings.database_url)
        versions = ModelVersions.from_settings(settings, engine, torchserve)
        privacy = LogPrivacy.from_settings(settings)
        erasures = Erasures(engine, privacy, settings.jwt_ttl_seconds)
        prediction_log = writer = rollouts = None
        if settings.prediction_log:
            prediction_log = PredictionLog(engine)
            writer = LogWriter(prediction_log, Outbox(
                settings.outbox_file, settings.outbox_max_rows, settings.outbox_max_age_seconds),
                erasures.erased_since)
            writer.start()
            rollouts = RolloutStore(engine, settings.model_name)
        snapshot = ControlSnapshot(lambda: ControlState(
            time.time(), settings.model_name, *versions.serving(),
            rollouts.active() if rollouts else None, erasures.recent()),
            settings.control_snapshot_file)
        snapshot.start()  # so that a gateway never asked yet has one when the database goes
        pipeline = PredictionPipeline(
            settings, torchserve, Admission(settings),
            Quota(rate_limiter, settings.predict_rate_limit), writer, privacy, rollouts,
            snapshot, ShadowQueue(settings.shadow_workers, settings.shadow_queue_size),
            handler.batch_size)
        return cls(settings, UserStore(settings.users_file), Tokens.from_settings(settings),
                   torchserve, handler, versions, prediction_log, writer, privacy, erasures,
                   rollouts, snapshot, pipeline)

