"""The farm's tables (SQLAlchemy 2 typed ORM). Created by Alembic only, never by ``create_all``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    func,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base

TOKEN_KINDS = ("admin", "agent", "client")
DEVICE_KINDS = ("local", "adb", "ssh")
JOB_KINDS = ("ops", "network")
JOB_STATUSES = ("queued", "running", "done", "failed")
CAMPAIGN_STATUSES = ("running", "done", "failed")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Token(Base):
    """An API token; only its SHA-256 is stored, the token itself is shown once."""

    __tablename__ = "tokens"
    __table_args__ = (CheckConstraint(_in("kind", TOKEN_KINDS), name="kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(200))
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")


class Device(Base):
    """One (hardware, execution config) pair: the unit a time model belongs to."""

    __tablename__ = "devices"
    __table_args__ = (
        UniqueConstraint("name", "execution_config"),
        CheckConstraint(_in("kind", DEVICE_KINDS), name="kind"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    host: Mapped[str] = mapped_column(String(200))
    execution_config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), default="online", server_default="online")
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    agent_token_id: Mapped[int | None] = mapped_column(ForeignKey("tokens.id", ondelete="SET NULL"))
    # Set when a timemodel.fit message is sent, cleared when the fit ends: a burst of sample
    # posts sends one fit, not fifty.
    fit_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Campaign(Base):
    """A request to profile N op configurations of some op types on one device."""

    __tablename__ = "campaigns"
    __table_args__ = (CheckConstraint(_in("status", CAMPAIGN_STATUSES), name="status"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"), index=True)
    op_types: Mapped[list[str]] = mapped_column(JSONB)
    # Samples per op type as planned: {op_type: count}.
    plan: Mapped[dict[str, int]] = mapped_column(JSONB)
    samples_requested: Mapped[int] = mapped_column(Integer)
    seed: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(16), default="running", server_default="running")
    # Samples kept for the adaptive round (0: none); planned by campaign.adapt once every job of
    # the first round ended. samples_requested and plan grow by what that round adds.
    adaptive_samples: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # When campaign.adapt was last sent: the reconciler re-sends it when it looks lost.
    adapt_requested_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # When the adaptive round was planned and its jobs stored; set once, never planned twice.
    adapted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # Device-time budget (s of measuring, the sum of the samples' environment.measure_s); None:
    # no limit. Once spent, the campaign's queued jobs are skipped (done, result.skipped).
    max_device_s: Mapped[float | None] = mapped_column(Double)
    # A fresh campaign starts the device's samples over: the fit worker fits on the samples of
    # the latest fresh campaign and the campaigns after it (server.samples.repository.fit_scope),
    # for a device whose speed changed (a busier or quieter host, an OS update). The older
    # samples stay stored.
    fresh: Mapped[bool] = mapped_column(Boolean, default=False, server_default="false")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Job(Base):
    """One unit of device work: a batch of op configs (``ops``) or one uploaded network."""

    __tablename__ = "jobs"
    __table_args__ = (
        CheckConstraint(_in("kind", JOB_KINDS), name="kind"),
        CheckConstraint(_in("status", JOB_STATUSES), name="status"),
        Index("ix_jobs_device_id_status", "device_id", "status"),
        Index("ix_jobs_status_enqueued_at", "status", "enqueued_at"),
        Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    campaign_id: Mapped[int | None] = mapped_column(
        ForeignKey("campaigns.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(16), default="queued", server_default="queued")
    # ops jobs: [{index, op_type, config}]
    configs: Mapped[list[dict[str, Any]] | None] = mapped_column(JSONB)
    # network jobs: the uploaded .tflite file.
    model_bytes: Mapped[bytes | None] = mapped_column(LargeBinary, deferred=True)
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    model_name: Mapped[str | None] = mapped_column(String(200))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    enqueued_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Sample(Base):
    """One measured op on one device config: configuration, features and latency statistics."""

    __tablename__ = "samples"
    __table_args__ = (
        UniqueConstraint("job_id", "index"),
        Index("ix_samples_device_id_op_type", "device_id", "op_type"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    index: Mapped[int] = mapped_column(Integer)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    op_type: Mapped[str] = mapped_column(String(64))
    config: Mapped[dict[str, Any]] = mapped_column(JSONB)
    features: Mapped[dict[str, Any]] = mapped_column(JSONB)
    median_ms: Mapped[float] = mapped_column(Double)
    p10_ms: Mapped[float | None] = mapped_column(Double)
    p90_ms: Mapped[float | None] = mapped_column(Double)
    std_ms: Mapped[float | None] = mapped_column(Double)
    runs: Mapped[int | None] = mapped_column(Integer)
    environment: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class ModelVersion(Base):
    """One fit of a device's time model: tree JSON (``DeviceTimeModel.to_dict()``) and metrics."""

    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("device_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[int] = mapped_column(ForeignKey("devices.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    tree: Mapped[dict[str, Any]] = mapped_column(JSONB)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB)
    sample_count: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    trained_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
