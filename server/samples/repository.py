"""Sample queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from server.tables import Sample


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


def count_device_samples(session: Session, device_id: int) -> int:
    return int(
        session.scalar(select(func.count(Sample.id)).where(Sample.device_id == device_id)) or 0
    )


def device_samples(session: Session, device_id: int, op_type: str | None = None) -> list[Sample]:
    """A device's samples (of one op type if given), oldest first."""
    statement = select(Sample).where(Sample.device_id == device_id)
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
