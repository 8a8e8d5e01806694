"""Campaigns, network benchmarks and the agent's job lifecycle.

Rows first, messages after commit: every ``bench.run`` is buffered with
:func:`server.db.send_after_commit` and leaves only once the request's transaction has committed.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fdiot.celery_config import BUDGET_SPENT, CAMPAIGN_ADAPT
from fdiot.settings import Settings, get_settings
from models.features import TFLiteParseError, parse_tflite
from models.opspace import OP_TYPES, ConfigError, validate_config
from server.auth.service import Principal
from server.db import send_after_commit
from server.devices.service import device_or_404
from server.errors import conflict, field_error, not_found
from server.jobs import repository
from server.jobs.planning import adaptive_budget, chunk_jobs, plan_campaign, round_device_s
from server.jobs.schemas import AgentJobRead, CampaignCreate, CampaignRead, JobRead
from server.samples.repository import done_indices
from server.tables import Campaign, Device, Job
from server.timemodels.service import request_fit
from worker.queues import BENCH_RUN, FIT_QUEUE, device_queue

# Seeds drawn for campaigns without one: 31 bits, printable and reproducible.
SEED_BITS = 31


def enqueue_job(session: Session, job: Job) -> None:
    """Send ``bench.run(job.id)`` to the device's queue once this transaction commits."""
    send_after_commit(session, BENCH_RUN, (job.id,), device_queue(job.device_id))


def create_campaign(
    session: Session, settings: Settings, device_id: int, body: CampaignCreate
) -> Campaign:
    """Plan a campaign, store it and its jobs, and queue the jobs (after commit)."""
    device = device_or_404(session, device_id)
    extra: list[tuple[str, dict[str, Any]]] = []
    for i, item in enumerate(body.configs or []):
        if item.op_type not in OP_TYPES:
            raise field_error(
                ("body", "configs", i, "op_type"), f"unknown op type {item.op_type!r}"
            )
        try:
            extra.append((item.op_type, validate_config(item.op_type, item.config)))
        except ConfigError as exc:
            raise field_error(("body", "configs", i, "config", exc.field), exc.message) from exc
    op_types = body.op_types or list(OP_TYPES)
    samples = body.samples if body.samples is not None else settings.default_campaign_samples
    if body.configs and body.samples is None and body.op_types is None:
        samples = 0  # only the explicit configurations (plus the invoke overhead)
    if body.adaptive_samples is not None and body.adaptive_samples > samples:
        raise field_error(
            ("body", "adaptive_samples"),
            f"at most the campaign's {samples} samples can be kept for the adaptive round",
        )
    adaptive = adaptive_budget(
        samples,
        body.adaptive_samples,
        settings.adaptive_fraction,
        settings.adaptive_min_campaign_samples,
    )
    minutes = (
        body.max_device_minutes
        if body.max_device_minutes is not None
        else settings.default_campaign_device_minutes
    )
    seed = body.seed if body.seed is not None else secrets.randbits(SEED_BITS)
    # The first round gets the rest of the budget; the adaptive round is planned when it ended.
    plan = plan_campaign(op_types, samples - adaptive, seed, settings.campaign_job_size, extra)
    campaign = repository.add_campaign(
        session,
        device_id=device.id,
        op_types=sorted(plan.counts, key=list(OP_TYPES).index),
        plan=plan.counts,
        samples_requested=plan.total_samples,
        seed=seed,
        adaptive_samples=adaptive,
        max_device_s=minutes * 60.0 if minutes > 0 else None,
        fresh=body.fresh,
    )
    for configs in plan.jobs:
        job = repository.add_job(
            session, kind="ops", device_id=device.id, campaign_id=campaign.id, configs=configs
        )
        enqueue_job(session, job)
    return campaign


def campaign_read(session: Session, campaign: Campaign) -> CampaignRead:
    progress = repository.campaign_progress(session, campaign.id)
    return CampaignRead(
        id=campaign.id,
        device_id=campaign.device_id,
        status=campaign.status,
        op_types=campaign.op_types,
        plan=campaign.plan,
        seed=campaign.seed,
        samples_requested=campaign.samples_requested,
        samples_done=progress.samples_done,
        samples_disturbed=progress.samples_disturbed,
        jobs_total=progress.jobs_total,
        jobs_done=progress.jobs_done,
        jobs_failed=progress.jobs_failed,
        job_ids=progress.job_ids,
        adaptive_samples=campaign.adaptive_samples,
        adapted_at=campaign.adapted_at,
        max_device_minutes=(
            campaign.max_device_s / 60.0 if campaign.max_device_s is not None else None
        ),
        device_minutes=progress.device_s / 60.0,
        jobs_skipped=progress.jobs_skipped,
        fresh=campaign.fresh,
        created_at=campaign.created_at,
        finished_at=campaign.finished_at,
    )


def campaign_or_404(session: Session, campaign_id: int) -> Campaign:
    campaign = repository.get_campaign(session, campaign_id)
    if campaign is None:
        raise not_found("campaign", campaign_id)
    return campaign


def create_benchmark(session: Session, device_id: int, content: bytes, name: str | None) -> Job:
    """Store an uploaded network as a ``network`` job and queue it (after commit)."""
    device = device_or_404(session, device_id)
    try:
        parse_tflite(content)
    except TFLiteParseError as exc:
        raise field_error(("body", "file"), f"not a TFLite model: {exc}") from exc
    job = repository.add_job(
        session,
        kind="network",
        device_id=device.id,
        model_bytes=content,
        model_sha256=hashlib.sha256(content).hexdigest(),
        model_name=name,
    )
    enqueue_job(session, job)
    return job


def job_read(job: Job) -> JobRead:
    return JobRead(
        id=job.id,
        kind=job.kind,
        status=job.status,
        device_id=job.device_id,
        campaign_id=job.campaign_id,
        name=job.model_name,
        model_sha256=job.model_sha256,
        configs_total=len(job.configs or []),
        error=job.error,
        result=job.result,
        attempts=job.attempts,
        created_at=job.created_at,
        enqueued_at=job.enqueued_at,
        started_at=job.started_at,
        heartbeat_at=job.heartbeat_at,
        finished_at=job.finished_at,
    )


def job_or_404(session: Session, job_id: int, *, for_update: bool = False) -> Job:
    job = repository.get_job(session, job_id, for_update=for_update)
    if job is None:
        raise not_found("job", job_id)
    return job


def check_agent_owns(principal: Principal, device: Device) -> None:
    """403 when an agent token reports for a device registered by another agent."""
    if (
        principal.kind == "agent"
        and device.agent_token_id is not None
        and device.agent_token_id != principal.token_id
    ):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, f"device {device.id} is served by another agent"
        )


def agent_job(session: Session, job_id: int, principal: Principal) -> tuple[Job, Device]:
    """The job and its device, after checking the calling agent serves that device."""
    job = job_or_404(session, job_id, for_update=True)
    device = device_or_404(session, job.device_id)
    check_agent_owns(principal, device)
    return job, device


# A round whose remaining device time is below this is spent: its samples' measure_s are floats
# summed by PostgreSQL in no fixed order, so a round spent exactly can come out a few ulps short.
# 1 ms is far below one sample's measuring time (0.2-1 s on the development hosts).
SPENT_TOLERANCE_S = 1e-3


def device_s_left(session: Session, job: Job) -> float | None:
    """Device time (s) the job may still use before its campaign's round budget is spent;
    None for a network job or a campaign without a budget."""
    if job.campaign_id is None:
        return None
    campaign = campaign_or_404(session, job.campaign_id)
    limit = round_device_s(
        campaign.max_device_s,
        campaign.samples_requested,
        campaign.adaptive_samples,
        adapted=campaign.adapted_at is not None,
    )
    if limit is None:
        return None
    return limit - repository.campaign_device_s(session, campaign.id)


def agent_job_read(session: Session, job: Job) -> AgentJobRead:
    return AgentJobRead(
        id=job.id,
        kind=job.kind,
        device_id=job.device_id,
        status=job.status,
        attempts=job.attempts,
        configs=job.configs or [],
        done_indices=done_indices(session, job.id),
        model_sha256=job.model_sha256,
        name=job.model_name,
        device_s_left=device_s_left(session, job),
    )


def _refuse_finished(job: Job) -> None:
    if job.status in ("done", "failed"):
        raise conflict(f"job {job.id} is already {job.status}")


def start_job(session: Session, job: Job) -> None:
    """Mark the job running and count the attempt; 409 when it already finished."""
    _refuse_finished(job)
    job.status = "running"
    job.attempts += 1
    job.started_at = func.now()
    job.heartbeat_at = func.now()
    job.error = None
    session.flush()  # load the database's timestamps back into the row


def heartbeat_job(session: Session, job: Job) -> None:
    """Record that the job's agent reported just now."""
    job.heartbeat_at = func.now()
    if job.status == "queued":  # samples from an agent that never called start
        job.status = "running"
        job.started_at = func.now()
    session.flush()


@dataclass(frozen=True)
class CampaignSettled:
    """What :func:`settle_campaign` did: finished the campaign, or sent ``campaign.adapt``."""

    finished: Campaign | None = None
    adapt_sent: bool = False


def settle_campaign(session: Session, settings: Settings, campaign_id: int) -> CampaignSettled:
    """The one place a campaign moves on once its jobs ended (agent's complete/fail, the
    reconciler, campaign.adapt): send ``campaign.adapt`` (after commit) when its adaptive round is
    due, or re-send it when the last request is older than ``reconcile_after_s`` and the round
    still was not planned (the message was lost); otherwise finish it when every job ended.
    The caller asks for a fit when it finished."""
    now = session.scalar(select(func.now()))
    assert now is not None
    resend_before = now - timedelta(seconds=settings.reconcile_after_s)
    if repository.claim_adapt_request(session, campaign_id, resend_before):
        send_after_commit(session, CAMPAIGN_ADAPT, (campaign_id,), FIT_QUEUE)
        return CampaignSettled(adapt_sent=True)
    return CampaignSettled(finished=repository.finish_campaign_if_complete(session, campaign_id))


def add_adaptive_round(
    session: Session,
    settings: Settings,
    campaign: Campaign,
    drawn: Sequence[tuple[str, dict[str, Any]]],
) -> list[Job]:
    """Store the adaptive round's configurations as new jobs of ``campaign`` and queue them
    (after commit); grows the campaign's plan and ``samples_requested``. Returns no jobs when
    the round was already stored (a duplicate ``campaign.adapt``)."""
    plan = dict(campaign.plan)
    for op_type, _config in drawn:
        plan[op_type] = plan.get(op_type, 0) + 1
    if not repository.mark_adapted(session, campaign.id, plan, len(drawn)):
        return []
    jobs: list[Job] = []
    for configs in chunk_jobs(drawn, settings.campaign_job_size):
        job = repository.add_job(
            session,
            kind="ops",
            device_id=campaign.device_id,
            campaign_id=campaign.id,
            configs=configs,
        )
        enqueue_job(session, job)
        jobs.append(job)
    return jobs


def _after_job_finished(session: Session, job: Job) -> None:
    if job.campaign_id is not None:
        left = device_s_left(session, job)
        if left is not None and left < SPENT_TOLERANCE_S:
            # The round's budget is spent: its queued jobs will not run (the adaptive round, if
            # any, is still planned and gets what the whole budget leaves).
            repository.skip_queued_jobs(session, job.campaign_id, BUDGET_SPENT)
        settled = settle_campaign(session, get_settings(), job.campaign_id)
        if settled.finished is not None:
            request_fit(session, job.device_id)


def complete_job(session: Session, job: Job, result: dict[str, Any] | None) -> None:
    """Mark the job done with its result; finishing a campaign's last job asks for a fit."""
    _refuse_finished(job)
    job.status = "done"
    job.result = result
    job.error = None
    job.finished_at = func.now()
    job.heartbeat_at = func.now()
    session.flush()
    _after_job_finished(session, job)


def fail_job(session: Session, job: Job, error: str) -> None:
    """Mark the job failed with the agent's error message."""
    _refuse_finished(job)
    job.status = "failed"
    job.error = error
    job.finished_at = func.now()
    job.heartbeat_at = func.now()
    session.flush()
    _after_job_finished(session, job)
