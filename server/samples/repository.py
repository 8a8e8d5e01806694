"""Sample queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from server.tables import Campaign, Job, Sample


def insert_samples(session: Session, rows: Sequence[dict[str, Any]]) -> int:
    """Insert sample rows, skipping (job_id, index) pairs already stored; returns rows inserted."""
    if not rows:
        return 0
    inserted = session.execute(
        insert(Sample)
        .values(list(rows))
        .on_conflict_do_nothing(constraint="uq_samples_job_id_index")
        .returning(Sample.id)
    ).all()
    return len(inserted)


def done_indices(session: Session, job_id: int) -> list[int]:
    return list(
        session.scalars(select(Sample.index).where(Sample.job_id == job_id).order_by(Sample.index))
    )


def fit_start_campaign(session: Session, device_id: int) -> int | None:
    """The device's latest fresh campaign (``Campaign.fresh``): its models are fitted on that
    campaign's samples and later ones. None: on all the device's samples."""
    return session.scalar(
        select(func.max(Campaign.id)).where(Campaign.device_id == device_id, Campaign.fresh)
    )


def fit_scope(statement: Select[Any], device_id: int, start_campaign: int | None) -> Select[Any]:
    """``statement`` on Sample restricted to the device's samples that its models are fitted on:
    all of them, or (from ``start_campaign`` on) those of that campaign's jobs and later
    campaigns'. Samples of jobs outside any campaign are then left out too."""
    statement = statement.where(Sample.device_id == device_id)
    if start_campaign is None:
        return statement
    return statement.join(Job, Job.id == Sample.job_id).where(Job.campaign_id >= start_campaign)


def count_device_samples(session: Session, device_id: int) -> int:
    """The device's samples its models are fitted on (:func:`fit_scope`)."""
    start = fit_start_campaign(session, device_id)
    return int(session.scalar(fit_scope(select(func.count(Sample.id)), device_id, start)) or 0)


def device_samples(session: Session, device_id: int, op_type: str | None = None) -> list[Sample]:
    """The device's samples its models are fitted on (of one op type if given; all of them
    unless a fresh campaign started them over, :func:`fit_scope`), oldest first."""
    start = fit_start_campaign(session, device_id)
    statement = fit_scope(select(Sample), device_id, start)
    if op_type is not None:
        statement = statement.where(Sample.op_type == op_type)
    return list(session.scalars(statement.order_by(Sample.id)))


def sample_as_dict(sample: Sample) -> dict[str, Any]:
    """A stored sample in the shape of docs/internals.md ("Sample"), with the latency statistics
    both nested under ``latency`` and flat (``median_ms``...), as the fitter and plots read them."""
    latency = {
        "median_ms": sample.median_ms,
        "p10_ms": sample.p10_ms,
        "p90_ms": sample.p90_ms,
        "std_ms": sample.std_ms,
        "runs": sample.runs,
    }
    return {
        "index": sample.index,
        "job_id": sample.job_id,
        "op_type": sample.op_type,
        "config": sample.config,
        "features": sample.features,
        "latency": latency,
        **latency,
        "environment": sample.environment,
    }
