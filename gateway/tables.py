"""The prediction-log database's tables: the schema's model. Migrations in
gateway/migrations create and change them (gateway.db); `gateway.db check` proves
that the two agree."""

from sqlalchemy import (Boolean, Column, DateTime, Float, Index, Integer, MetaData, String,
                        Table, Text)

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
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("success", Boolean, nullable=False),
    Column("status_code", Integer, nullable=False),
    Column("class_id", Integer),
    Column("category_name", String(255)),
    Column("score", Integer),
    Column("model_version", String(32)),
    Column("latency_ms", Integer),
    Column("error_detail", Text),
    # Progressive delivery (gateway.rollouts): which arm served the row, in which
    # rollout, and for a shadow copy whether it agreed with the default's answer.
    Column("arm", String(16)),
    Column("rollout_id", Integer),
    Column("shadow_top1_agree", Boolean),
    Column("shadow_top5_overlap", Integer),
    Index("ix_predictions_rollout", "rollout_id", "arm", "id"),
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
    Index("ix_rollouts_model_state", "model_name", "state"),
)
