"""Every setting (the gateway, the model agent, the CLIs), read once from the environment
into one object.

The app, its server (gateway/serve.py) and the CLIs all read the
environment through Settings.from_env: one variable, one default, one parser.
"""

import os
import sys
from dataclasses import dataclass, fields

from limits import parse_many

from core.served_model import MODEL_CONFIG_FILE, MODEL_NAME

MIN_SECRET_BYTES = 32


class SettingsError(RuntimeError):
    """The environment does not describe a gateway that may start."""


def _parse_bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


@dataclass(frozen=True)
class Settings:
    jwt_secret: str
    torchserve_url: str = "http://127.0.0.1:8080"
    torchserve_management_url: str = "http://127.0.0.1:8081"
    model_name: str = MODEL_NAME
    model_config_file: str = str(MODEL_CONFIG_FILE)  # the handler's limits (batch, top-k)
    users_file: str = "config/users.json"
    # Our tokens' signing keys (gateway.identity.keys); without them JWT_SECRET signs (HS256, the
    # fallback of one release). Trusted OpenID providers (gateway.identity.federation).
    jwt_keys_file: str = ""
    trusted_issuers_file: str = ""
    jwt_ttl_seconds: int = 1800
    jwt_issuer: str = "image-classifier-gateway"
    jwt_audience: str = "image-classifier"
    max_upload_bytes: int = 10_000_000
    max_image_pixels: int = 40_000_000
    upstream_connect_timeout: float = 2.0
    upstream_read_timeout: float = 35.0
    upstream_pool_size: int = 32
    # Predictions in flight to TorchServe per gateway process; past it a request waits
    # up to INFLIGHT_WAIT_MS for a slot, then gets 503 + Retry-After (load shedding).
    max_inflight_predictions: int = 16
    # At most this many of them one user's (0: no bound but the process's).
    max_inflight_per_user: int = 0
    inflight_wait_ms: int = 20
    rate_limit_storage_uri: str = "memory://"
    # Traces (core.tracing): the standard OpenTelemetry variables; export is off
    # unless an endpoint is named.
    otel_exporter_otlp_endpoint: str = ""
    otel_exporter_otlp_traces_endpoint: str = ""
    otel_exporter_otlp_protocol: str = "http/protobuf"  # or grpc
    otel_traces_exporter: str = "otlp"
    otel_sdk_disabled: bool = False
    otel_service_name: str = ""
    login_rate_limit: str = "5 per minute"
    login_address_rate_limit: str = "30 per minute"
    predict_rate_limit: str = "600 per minute"
    trusted_proxy_hops: int = 0
    database_url: str = "sqlite:///run/predictions.db"
    prediction_log: bool = True
    database_upgrade_on_start: bool = True
    # What keeps predictions going while the database is down (gateway.prediction_log.writer,
    # gateway.models.control_snapshot): the outbox of log rows and the last control snapshot.
    gateway_state_dir: str = "run/gateway-state"
    outbox_max_rows: int = 500_000  # past it (or the age), predictions answer 503
    outbox_max_age_seconds: float = 86_400.0
    # The prediction log's lifecycle (gateway.prediction_log.retention, gateway.prediction_log.privacy).
    prediction_log_retention_days: int = 0  # 0: keep every row
    prediction_log_usernames: str = "plain"  # plain | keyed-hash
    prediction_log_filenames: str = "full"  # full | extension-only | off
    prediction_log_keys_file: str = ""  # the keyed hash's keys (a secret)
    # Model versions as declared state (core.catalog, agent.model_agent).
    model_store: str = "model_store"  # archives an operator registers by name; agents' seeds
    max_archive_bytes: int = 1 << 30  # largest archive an admin may push
    version_wait_seconds: float = 180.0  # an admin call waits this long for the replicas
    replica_stale_seconds: float = 30.0  # a replica with no newer report stops counting
    max_workers_per_version: int = 8  # the most TorchServe workers an admin may ask for
    # Archive signatures (core.signatures), checked by the gateway and by every agent.
    model_trusted_keys_file: str = ""  # PEM public keys and/or CA certificates
    allow_unsigned_archives: bool = False  # local experiments only; loud at start
    # The model agent beside each TorchServe.
    agent_store: str = "run/agent-store"  # archives it fetched; TorchServe's model store
    agent_state_file: str = "run/agent-state.json"  # its replica's readiness reads it
    agent_interval_seconds: float = 2.0
    replica_id: str = ""  # "": the host name
    model_seed: str = "classifier-1.0.mar"  # declared from MODEL_STORE on an empty database
    shadow_workers: int = 2  # threads per process sending shadow copies
    shadow_queue_size: int = 16  # copies running or waiting per process; more are dropped
    # the gateway's server (gateway/serve.py)
    gateway_bind: str = "127.0.0.1:8000"
    gateway_workers: int = 1
    gateway_threads: int = 32  # above MAX_INFLIGHT_PREDICTIONS: spare threads shed load
    gateway_log_level: str = "info"
    prometheus_multiproc_dir: str = ""  # "": one process (scripts/start-gateway.sh sets it)

    @property
    def outbox_file(self) -> str:
        return os.path.join(self.gateway_state_dir, "outbox.db")

    @property
    def control_snapshot_file(self) -> str:
        return os.path.join(self.gateway_state_dir, "control-snapshot.json")

    @classmethod
    def from_env(cls, environ=None, *, require_secret: bool = True, **overrides) -> "Settings":
        """Build from VARIABLE_NAME = field name upper-cased; overrides win.

        The CLIs pass require_secret=False: they read settings but issue no tokens.
        """
        environ = os.environ if environ is None else environ
        values = {}
        for f in fields(cls):
            raw = environ.get(f.name.upper())
            if raw is None:
                continue
            try:
                values[f.name] = _parse_bool(raw) if f.type is bool else f.type(raw)
            except ValueError as exc:
                raise SettingsError(
                    f"{f.name.upper()}={raw!r} is not a valid {f.type.__name__}"
                ) from exc
        values.update(overrides)
        if "jwt_secret" not in values and (values.get("jwt_keys_file") or not require_secret):
            values["jwt_secret"] = ""
        elif "jwt_secret" not in values:
            raise SettingsError(
                "Neither JWT_KEYS_FILE nor JWT_SECRET is set. Make a keys file with: "
                "python -m gateway.identity.keys --file run/jwt-keys.json rotate"
            )
        settings = cls(**values)
        settings.validate(require_secret)
        return settings

    def validate(self, require_secret: bool = True) -> None:
        if require_secret and (self.jwt_secret or not self.jwt_keys_file) \
                and len(self.jwt_secret.encode()) < MIN_SECRET_BYTES:
            raise SettingsError(
                f"JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes "
                f"(got {len(self.jwt_secret.encode())})"
            )
        if self.jwt_ttl_seconds <= 0:
            raise SettingsError("JWT_TTL_SECONDS must be positive")
        if self.max_upload_bytes <= 0 or self.max_image_pixels <= 0:
            raise SettingsError("MAX_UPLOAD_BYTES and MAX_IMAGE_PIXELS must be positive")
        if min(self.gateway_workers, self.gateway_threads, self.shadow_workers,
               self.shadow_queue_size, self.max_inflight_predictions,
               self.max_workers_per_version) < 1:
            raise SettingsError("GATEWAY_WORKERS, GATEWAY_THREADS, SHADOW_WORKERS, "
                                "SHADOW_QUEUE_SIZE, MAX_INFLIGHT_PREDICTIONS and "
                                "MAX_WORKERS_PER_VERSION must be 1 or more")
        if min(self.max_archive_bytes, self.version_wait_seconds, self.replica_stale_seconds,
               self.agent_interval_seconds, self.outbox_max_age_seconds) <= 0:
            raise SettingsError("MAX_ARCHIVE_BYTES, VERSION_WAIT_SECONDS, REPLICA_STALE_SECONDS, "
                                "AGENT_INTERVAL_SECONDS and OUTBOX_MAX_AGE_SECONDS must be "
                                "positive")
        if min(self.inflight_wait_ms, self.prediction_log_retention_days,
               self.max_inflight_per_user, self.outbox_max_rows) < 0:
            raise SettingsError("INFLIGHT_WAIT_MS, PREDICTION_LOG_RETENTION_DAYS, "
                                "MAX_INFLIGHT_PER_USER and OUTBOX_MAX_ROWS must be 0 or more")
        if self.otel_exporter_otlp_protocol not in ("http/protobuf", "grpc"):
            raise SettingsError("OTEL_EXPORTER_OTLP_PROTOCOL must be http/protobuf or grpc")
        if self.trusted_proxy_hops < 0:
            raise SettingsError("TRUSTED_PROXY_HOPS must be 0 or more")
        for name in ("login_rate_limit", "login_address_rate_limit", "predict_rate_limit"):
            try:
                parse_many(getattr(self, name))
            except ValueError as exc:
                raise SettingsError(f"{name.upper()}: {exc}") from None


def cli_settings(**overrides) -> Settings:
    """What a CLI reads (it issues no tokens); a bad environment exits 2 with the reason."""
    try:
        return Settings.from_env(require_secret=False, **overrides)
    except SettingsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
