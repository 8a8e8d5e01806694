"""Campaign and job queries."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Exists, and_, case, exists, func, or_, select, update
from sqlalchemy.orm import Session, undefer

from server.tables import Campaign, Job, Sample

UNFINISHED_STATUSES = ("queued", "running")


def add_campaign(
    session: Session,
    *,
    device_id: int,
    op_types: list[str],
    plan: dict[str, int],
    samples_requested: int,
    seed: int,
    adaptive_samples: int = 0,
    max_device_s: float | None = None,
    fresh: bool = False,
) -> Campaign:
    campaign = Campaign(
        device_id=device_id,
        op_types=op_types,
        plan=plan,
        samples_requested=samples_requested,
        seed=seed,
        adaptive_samples=adaptive_samples,
        max_device_s=max_device_s,
        fresh=fresh,
        status="running",
    )
    session.add(campaign)
    session.flush()
    return campaign


def add_job(
    session: Session,
    *,
    kind: str,
    device_id: int,
    campaign_id: int | None = None,
    configs: list[dict[str, Any]] | None = None,
    model_bytes: bytes | None = None,
    model_sha256: str | None = None,
    model_name: str | None = None,
) -> Job:
    job = Job(
        kind=kind,
        device_id=device_id,
        campaign_id=campaign_id,
        configs=configs,
        model_bytes=model_bytes,
        model_sha256=model_sha256,
        model_name=model_name,
        status="queued",
        enqueued_at=func.now(),
    )
    session.add(job)
    session.flush()
    return job


def get_job(session: Session, job_id: int, *, for_update: bool = False) -> Job | None:
    return session.get(Job, job_id, with_for_update=for_update)


def get_job_model_bytes(session: Session, job_id: int) -> bytes | None:
    return session.scalar(select(Job.model_bytes).where(Job.id == job_id))


def get_campaign(session: Session, campaign_id: int) -> Campaign | None:
    return session.get(Campaign, campaign_id)


@dataclass(frozen=True)
class CampaignProgress:
    samples_done: int
    samples_disturbed: int
    jobs_total: int
    jobs_done: int
    jobs_failed: int
    job_ids: list[int]
    # Device time the campaign's samples took (s), and its jobs skipped once its budget was spent.
    device_s: float
    jobs_skipped: int


# A sample's device time: environment.measure_s, the wall time of all its attempts, canary waits
# and pauses (agent/runner.py LatencyStats.measure_s); a sample without it counts nothing.
_SAMPLE_DEVICE_S = func.coalesce(Sample.environment["measure_s"].as_float(), 0.0)
# A job skipped because its campaign's device-time budget was spent (see skip_queued_jobs).
_SKIPPED = Job.result["skipped"].isnot(None)


def campaign_device_s(session: Session, campaign_id: int) -> float:
    """Seconds of device time the campaign's samples took so far."""
    total = session.scalar(
        select(func.sum(_SAMPLE_DEVICE_S))
        .join(Job, Job.id == Sample.job_id)
        .where(Job.campaign_id == campaign_id)
    )
    return float(total or 0.0)


def skip_queued_jobs(session: Session, campaign_id: int, reason: str) -> int:
    """Mark the campaign's queued jobs done without running them (``result.skipped`` says
    why); their ``bench.run`` messages then find them finished. Returns how many."""
    skipped = session.execute(
        update(Job)
        .where(Job.campaign_id == campaign_id, Job.status == "queued")
        .values(
            status="done",
            result={"skipped": reason, "samples_measured": 0},
            finished_at=func.now(),
        )
        .returning(Job.id)
    ).all()
    return len(skipped)


def campaign_progress(session: Session, campaign_id: int) -> CampaignProgress:
    rows = session.execute(
        select(Job.id, Job.status, _SKIPPED).where(Job.campaign_id == campaign_id).order_by(Job.id)
    ).all()
    # The agent flags a sample still disturbed after its attempts with environment.quiet = false
    # (agent/runner.py); the fitter leaves those out (models.timemodel.quiet_samples).
    disturbed = Sample.environment["quiet"].as_boolean().is_(False)
    samples_done, samples_disturbed, device_s = session.execute(
        select(
            func.count(Sample.id),
            func.count(Sample.id).filter(disturbed),
            func.sum(_SAMPLE_DEVICE_S),
        )
        .join(Job, Job.id == Sample.job_id)
        .where(Job.campaign_id == campaign_id)
    ).one()
    return CampaignProgress(
        samples_done=int(samples_done or 0),
        samples_disturbed=int(samples_disturbed or 0),
        jobs_total=len(rows),
        jobs_done=sum(1 for _, s, _skipped in rows if s == "done"),
        jobs_failed=sum(1 for _, s, _skipped in rows if s == "failed"),
        job_ids=[job_id for job_id, _, _skipped in rows],
        device_s=float(device_s or 0.0),
        jobs_skipped=sum(1 for _, _, skipped in rows if skipped),
    )


def _unfinished_jobs(campaign_id: int) -> Exists:
    return exists().where(Job.campaign_id == campaign_id, Job.status.in_(UNFINISHED_STATUSES))


def _any_job_done(campaign_id: int) -> Exists:
    return exists().where(Job.campaign_id == campaign_id, Job.status == "done")


def claim_adapt_request(session: Session, campaign_id: int, resend_before: datetime) -> bool:
    """Record that ``campaign.adapt`` is being sent, when the campaign is due for its adaptive
    round: running, a budget kept, not adapted yet, every job ended, at least one done (a round
    whose jobs all failed has nothing to adapt from), and no request newer than
    ``resend_before`` (an older one is taken as lost). True when the caller must send it."""
    claimed = session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == "running",
            Campaign.adaptive_samples > 0,
            Campaign.adapted_at.is_(None),
            or_(
                Campaign.adapt_requested_at.is_(None),
                Campaign.adapt_requested_at < resend_before,
            ),
            ~_unfinished_jobs(campaign_id),
            _any_job_done(campaign_id),
        )
        .values(adapt_requested_at=func.now())
        .returning(Campaign.id)
    ).scalar_one_or_none()
    return claimed is not None


def mark_adapted(
    session: Session, campaign_id: int, plan: dict[str, int], added_samples: int
) -> bool:
    """Record the campaign's adaptive round (its new plan and sample count) unless one was
    recorded already; True when this call recorded it (the caller then stores the jobs)."""
    marked = session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == "running",
            Campaign.adapted_at.is_(None),
        )
        .values(
            adapted_at=func.now(),
            plan=plan,
            samples_requested=Campaign.samples_requested + added_samples,
        )
        .returning(Campaign.id)
    ).scalar_one_or_none()
    if marked is None:
        return False
    session.get(Campaign, campaign_id, populate_existing=True)
    return True


def finish_campaign_if_complete(session: Session, campaign_id: int) -> Campaign | None:
    """Mark the campaign done (or failed, when every job failed) once no job is queued or
    running and its adaptive round (if any) was planned; returns the campaign when this call
    finished it."""
    unfinished = _unfinished_jobs(campaign_id)
    any_done = _any_job_done(campaign_id)
    # A pending adaptive round holds the campaign open, unless no job succeeded (then it fails).
    adaptive_pending = and_(Campaign.adaptive_samples > 0, Campaign.adapted_at.is_(None), any_done)
    finished_id = session.execute(
        update(Campaign)
        .where(
            Campaign.id == campaign_id,
            Campaign.status == "running",
            ~unfinished,
            ~adaptive_pending,
        )
        .values(
            status=case((any_done, "done"), else_="failed"),
            finished_at=func.now(),
        )
        .returning(Campaign.id)
    ).scalar_one_or_none()
    if finished_id is None:
        return None
    return session.get(Campaign, finished_id, populate_existing=True)


def running_campaign_ids(session: Session) -> list[int]:
    return list(session.scalars(select(Campaign.id).where(Campaign.status == "running")))


def lost_queued_jobs(session: Session, enqueued_before: datetime) -> list[Job]:
    """Queued jobs whose message was sent before ``enqueued_before`` and never started: locked,
    skipping rows another reconciler holds."""
    return list(
        session.scalars(
            select(Job)
            .where(Job.status == "queued", Job.enqueued_at < enqueued_before)
            .order_by(Job.id)
            .with_for_update(skip_locked=True)
        )
    )


def stale_running_jobs(session: Session, heartbeat_before: datetime) -> list[Job]:
    """Running jobs whose agent has been silent since ``heartbeat_before``."""
    last_sign = func.coalesce(Job.heartbeat_at, Job.started_at, Job.enqueued_at)
    return list(
        session.scalars(
            select(Job)
            .where(and_(Job.status == "running", last_sign < heartbeat_before))
            .order_by(Job.id)
            .with_for_update(skip_locked=True)
        )
    )


def network_jobs_with_results(session: Session, device_id: int) -> list[Job]:
    """Finished network benchmarks of a device, with their uploaded model bytes loaded."""
    return list(
        session.scalars(
            select(Job)
            .options(undefer(Job.model_bytes))
            .where(Job.device_id == device_id, Job.kind == "network", Job.status == "done")
            .order_by(Job.id)
        )
    )
