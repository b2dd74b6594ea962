"""The database's tables: the schema's model. Migrations in core/database/migrations create
and change them (gateway.cli.db); `gateway.cli.db check` proves that the two agree."""

from sqlalchemy import (BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer,
                        LargeBinary, MetaData, String, Table, Text, UniqueConstraint)

metadata = MetaData()

predictions = Table(
    "predictions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("request_id", String(128), nullable=False),
    Column("username", String(64), index=True),
    Column("filename", String(255)),
    Column("extension", String(255)),
    Column("upload_sha256", String(64)),
    Column("upload_bytes", Integer),
    Column("created_at", DateTime(timezone=True), nullable=False, index=True),
    Column("success", Boolean, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("class_id", Integer),
    Column("category_name", String(255)),
    Column("score", Integer),
    Column("model_version", String(32)),
    Column("latency_ms", Integer),
    Column("error_detail", Text),
    # Progressive delivery (gateway.models.rollouts): which arm served the row, in which
    # rollout, and for a shadow copy whether it agreed with the default's answer.
    Column("arm", String(16)),
    Column("rollout_id", Integer),
    Column("shadow_top1_agree", Boolean),
    Column("shadow_top5_overlap", Integer),
    Column("trace_id", String(32), index=True),
    # A row delivered from a gateway's outbox (gateway.prediction_log.outbox): its id there, so that a
    # second delivery of it adds nothing. NULL for rows written directly.
    Column("outbox_id", String(32)),
    Column("model_name", String(64)),  # NULL on rows older than several models: MODEL_NAME's
    Index("ix_predictions_rollout", "rollout_id", "arm", "id"),
    Index("ux_predictions_outbox_id", "outbox_id", unique=True),
)

rollouts = Table(
    "rollouts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("mode", String(16), nullable=False),  # canary | shadow
    Column("version", String(32), nullable=False),
    Column("percent", Float, nullable=False),
    Column("sticky", Boolean, nullable=False),
    Column("guard", Text, nullable=False),  # JSON
    Column("state", String(16), nullable=False),  # active | promoted | aborted | rolled_back | replaced
    Column("reason", Text),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("ended_at", DateTime(timezone=True)),
    # JSON: an ended rollout's figures, kept before a retention purge deletes its rows.
    Column("figures", Text),
    Index("ix_rollouts_model_state", "model_name", "state"),
)

# Users whose prediction-log rows were erased (gateway.prediction_log.erasures): how many went, and
# the moment before which their tokens are refused.
erasures = Table(
    "erasures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("username", String(255), nullable=False),
    Column("erased_at", DateTime(timezone=True), nullable=False, index=True),
    Column("erased_by", String(64), nullable=False),
    Column("rows_deleted", BigInteger, nullable=False),
)

# Model versions as declared state (core.catalog): what every replica's agent makes
# its TorchServe serve, the archives they load, and what each replica reports back.
model_archives = Table(
    "model_archives", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),  # file name: classifier-2.0.mar
    Column("sha256", String(64)),  # set when the last chunk is in
    Column("size_bytes", BigInteger, nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("version", String(32), nullable=False),  # from the archive's manifest
    Column("weights", Text),  # JSON: the archive's weights.json record
    Column("signature", Text),  # its Sigstore bundle (core.signatures); NULL: unsigned
    Column("uploaded_at", DateTime(timezone=True), nullable=False),
    Column("uploaded_by", String(64), nullable=False),
    Index("ix_model_archives_sha256", "sha256"),
    Index("ix_model_archives_name", "name", "id"),
)

model_archive_chunks = Table(
    "model_archive_chunks", metadata,
    Column("archive_id", Integer, ForeignKey("model_archives.id", ondelete="CASCADE"),
           primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("data", LargeBinary, nullable=False),
)

model_versions = Table(
    "model_versions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("model_name", String(64), nullable=False),
    Column("version", String(32), nullable=False),
    Column("archive_id", Integer, ForeignKey("model_archives.id"), nullable=False),
    Column("is_default", Boolean, nullable=False),
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("registered_by", String(64), nullable=False),
    Column("retired_at", DateTime(timezone=True)),  # unregistered; NULL while declared
    # What the operator asked TorchServe for (NULL: its defaults); the agents apply it.
    Column("min_workers", Integer),
    Column("max_workers", Integer),
    Column("batch_size", Integer),
    Column("max_batch_delay", Integer),
    Column("response_timeout", Integer),
    UniqueConstraint("model_name", "version", name="uq_model_versions_name_version"),
)

# The audit trail of model changes (core.model_history): append-only (migration 0008's
# triggers), each record chained to the one before it by its hash.
model_history = Table(
    "model_history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("model_name", String(64), nullable=False),
    Column("action", String(32), nullable=False),
    Column("actor", String(255), nullable=False),
    Column("from_version", String(32)),
    Column("to_version", String(32)),
    Column("reason", Text),
    Column("request_id", String(128)),
    Column("default_version", String(32)),  # the model's default after the change
    Column("prev_hash", String(64), nullable=False, unique=True),
    Column("hash", String(64), nullable=False),
    Index("ix_model_history_model", "model_name", "id"),
)

model_replicas = Table(
    "model_replicas", metadata,
    Column("replica_id", String(128), primary_key=True),
    Column("model_name", String(64), primary_key=True),
    Column("report", Text, nullable=False),  # JSON: default, versions' READY workers, errors
    Column("converged", Boolean, nullable=False),
    Column("last_seen", DateTime(timezone=True), nullable=False),
)
