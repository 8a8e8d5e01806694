"""Storing measured samples sent by agents."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models.opspace import ConfigError, validate_config
from server.devices.repository import touch_device
from server.errors import conflict, field_error
from server.jobs.service import heartbeat_job
from server.samples import repository
from server.samples.schemas import SamplesAccepted, SamplesPost
from server.tables import Job
from server.timemodels.service import request_fit_if_due


def store_samples(session: Session, job: Job, body: SamplesPost) -> SamplesAccepted:
    """Insert the samples idempotently on (job_id, index), heartbeat the job, and ask for a fit
    when enough new samples arrived since the device's last model version.

    Each sample must name an index of the job with the same op type and configuration; its
    configuration is validated against the op space (422 naming the variable).
    """
    if job.kind != "ops":
        raise conflict(f"job {job.id} is a {job.kind} job; post its result to /complete")
    planned = {int(item["index"]): item for item in job.configs or []}
    rows: list[dict[str, Any]] = []
    for i, sample in enumerate(body.samples):
        where = ("body", "samples", i)
        item = planned.get(sample.index)
        if item is None:
            raise field_error((*where, "index"), f"job {job.id} has no config index {sample.index}")
        if sample.op_type != item["op_type"]:
            raise field_error(
                (*where, "op_type"),
                f"config {sample.index} of job {job.id} is {item['op_type']}, not {sample.op_type}",
            )
        try:
            config = validate_config(sample.op_type, sample.config)
        except ConfigError as exc:
            raise field_error((*where, "config", exc.field), exc.message) from exc
        rows.append(
            {
                "job_id": job.id,
                "index": sample.index,
                "device_id": job.device_id,
                "op_type": sample.op_type,
                "config": config,
                "features": sample.features,
                "median_ms": sample.latency.median_ms,
                "p10_ms": sample.latency.p10_ms,
                "p90_ms": sample.latency.p90_ms,
                "std_ms": sample.latency.std_ms,
                "runs": sample.latency.runs,
                "environment": sample.environment,
            }
        )
    inserted = repository.insert_samples(session, rows)
    if job.status in ("queued", "running"):
        heartbeat_job(session, job)
    touch_device(session, job.device_id)
    fit_requested = inserted > 0 and request_fit_if_due(session, job.device_id)
    return SamplesAccepted(
        job_id=job.id,
        inserted=inserted,
        duplicates=len(rows) - inserted,
        fit_requested=fit_requested,
    )
