"""Server-side Celery tasks: ``timemodel.fit`` and ``campaign.adapt`` (queue ``fit``) and
``jobs.reconcile`` (queue ``control``, every ``reconcile_every_s`` from beat).

Each task is a thin wrapper around a plain function (:func:`run_fit`, :func:`run_adapt`,
:func:`run_reconcile`)
that opens its own session, commits once, and sends follow-up messages only after the commit.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import redis
from sqlalchemy import func, select

from fdiot.celery_config import (
    CAMPAIGN_ADAPT,
    FIT_TIME_LIMIT_S,
    JOBS_RECONCILE,
    TIMEMODEL_FIT,
    device_queue,
)
from fdiot.settings import get_settings
from server.db import commit_and_send, get_sessionmaker
from server.devices.repository import clear_fit_request, list_devices
from server.jobs import repository as jobs_repository
from server.jobs.service import add_adaptive_round, enqueue_job, settle_campaign
from server.timemodels.service import request_fit, request_fit_if_due
from worker.broker import pending_job_ids, waiting_job_ids
from worker.celery_app import FIT_TIME_LIMITS_S, celery_app

log = logging.getLogger(__name__)

# A job whose agent went silent this many times is failed instead of requeued: it most likely
# kills whatever runs it.
MAX_JOB_ATTEMPTS = 3


def _redis() -> redis.Redis:
    url = get_settings().redis_url
    if url is None:
        raise RuntimeError("REDIS_URL is not set and no embedded stack is running")
    return redis.Redis.from_url(url)


def fit_lock_name(device_id: int) -> str:
    return f"lock:fit:{device_id}"


def run_fit(device_id: int, force: bool = False) -> int | None:
    """Fit and store a new model version of ``device_id``; returns the version number, or None
    when another fit holds the device's lock or no new sample arrived (unless ``force``)."""
    lock = _redis().lock(fit_lock_name(device_id), timeout=FIT_TIME_LIMIT_S, blocking=False)
    if not lock.acquire():
        log.info("fit of device %s already running; skipped", device_id)
        return None
    from worker.fitting import fit_device  # the tree code loads only in the fit worker

    version_number: int | None = None
    try:
        with get_sessionmaker()() as session:
            version = fit_device(session, device_id, force=force)
            version_number = None if version is None else version.version
            session.commit()
    finally:
        with get_sessionmaker()() as session:
            # Samples that arrived during the fit may already make the next one due.
            clear_fit_request(session, device_id)
            request_fit_if_due(session, device_id)
            commit_and_send(session)
        lock.release()
    log.info("device %s: model version %s", device_id, version_number)
    return version_number


def adapt_lock_name(campaign_id: int) -> str:
    return f"lock:adapt:{campaign_id}"


@dataclass
class AdaptReport:
    """What one ``campaign.adapt`` did: the jobs it added (none when it was not due or already
    done) and whether that finished the campaign (a round with nothing to measure)."""

    campaign_id: int
    job_ids: list[int] = field(default_factory=list)
    samples_added: int = 0
    skipped: str | None = None
    finished: bool = False


def run_adapt(campaign_id: int) -> AdaptReport:
    """Plan and queue ``campaign_id``'s adaptive round (docs/internals.md, ``campaign.adapt``).

    Idempotent: under a Redis lock per campaign, and the round is stored only if the campaign's
    ``adapted_at`` is still empty (checked again in the same UPDATE that sets it), so a duplicate
    or re-sent message adds nothing. Does nothing while a job of the campaign is still unfinished.
    """
    report = AdaptReport(campaign_id=campaign_id)
    lock = _redis().lock(adapt_lock_name(campaign_id), timeout=FIT_TIME_LIMIT_S, blocking=False)
    if not lock.acquire():
        report.skipped = "another campaign.adapt holds the lock"
        return report
    from worker.fitting import plan_adaptive_round  # the tree code loads only in the fit worker

    try:
        with get_sessionmaker()() as session:
            campaign = jobs_repository.get_campaign(session, campaign_id)
            progress = jobs_repository.campaign_progress(session, campaign_id)
            if campaign is None:
                report.skipped = "no such campaign"
            elif campaign.adaptive_samples <= 0:
                report.skipped = "no adaptive round"
            elif campaign.adapted_at is not None or campaign.status != "running":
                report.skipped = "already adapted or finished"
            elif progress.jobs_done + progress.jobs_failed < progress.jobs_total:
                report.skipped = "first round still running"
            else:
                drawn = plan_adaptive_round(session, campaign)
                jobs = add_adaptive_round(session, get_settings(), campaign, drawn)
                report.job_ids = [job.id for job in jobs]
                report.samples_added = sum(len(job.configs or []) for job in jobs)
                # A round with nothing to measure ends the campaign here.
                settled = settle_campaign(session, get_settings(), campaign_id)
                if settled.finished is not None:
                    report.finished = True
                    request_fit(session, settled.finished.device_id)
            commit_and_send(session)
    finally:
        lock.release()
    log.info("campaign.adapt: %s", report)
    return report


@dataclass
class ReconcileReport:
    """What one reconciler pass did (job, campaign and device ids)."""

    resent: list[int] = field(default_factory=list)
    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    campaigns_finished: list[int] = field(default_factory=list)
    campaigns_adapt_sent: list[int] = field(default_factory=list)
    fits_requested: list[int] = field(default_factory=list)


def run_reconcile() -> ReconcileReport:
    """One pass of the reconciler (docs/internals.md, ``jobs.reconcile``).

    Re-sends queued jobs whose message is older than ``reconcile_after_s`` and is neither waiting
    in the device's queue nor being run; hands running jobs silent for ``job_stale_after_s`` back
    to the queue (or fails them after :data:`MAX_JOB_ATTEMPTS`); settles running campaigns with
    :func:`server.jobs.service.settle_campaign` (sends a due or lost ``campaign.adapt``, finishes
    those whose jobs all ended); asks for fits that are due.
    """
    settings = get_settings()
    report = ReconcileReport()
    broker = _redis()
    with get_sessionmaker()() as session:
        now = session.scalar(select(func.now()))
        assert now is not None
        pending_by_queue: dict[str, set[int]] = {}

        def message_pending(device_id: int, job_id: int) -> bool:
            queue = device_queue(device_id)
            if queue not in pending_by_queue:
                pending_by_queue[queue] = pending_job_ids(broker, queue)
            return job_id in pending_by_queue[queue]

        lost_before = now - timedelta(seconds=settings.reconcile_after_s)
        for job in jobs_repository.lost_queued_jobs(session, lost_before):
            if message_pending(job.device_id, job.id):
                continue
            job.enqueued_at = now
            enqueue_job(session, job)
            report.resent.append(job.id)

        stale_before = now - timedelta(seconds=settings.job_stale_after_s)
        for job in jobs_repository.stale_running_jobs(session, stale_before):
            if job.attempts >= MAX_JOB_ATTEMPTS:
                job.status = "failed"
                job.error = (
                    f"agent went silent for {settings.job_stale_after_s} s"
                    f" on {job.attempts} attempts"
                )
                job.finished_at = now
                report.failed.append(job.id)
                continue
            job.status = "queued"
            job.enqueued_at = now
            # An unacked copy belongs to the silent (probably dead) worker and Redis would hand
            # it back only after the visibility timeout: send anew unless one is still waiting.
            # A duplicate is harmless: bench.run skips finished work under the device lock.
            if job.id not in waiting_job_ids(broker, device_queue(job.device_id)):
                enqueue_job(session, job)
            report.requeued.append(job.id)
        session.flush()

        devices_with_finished_campaigns: set[int] = set()
        for campaign_id in jobs_repository.running_campaign_ids(session):
            settled = settle_campaign(session, settings, campaign_id)
            if settled.adapt_sent:
                report.campaigns_adapt_sent.append(campaign_id)
            if settled.finished is not None:
                report.campaigns_finished.append(settled.finished.id)
                devices_with_finished_campaigns.add(settled.finished.device_id)

        for device in list_devices(session):
            requested = (
                request_fit(session, device.id)
                if device.id in devices_with_finished_campaigns
                else request_fit_if_due(session, device.id)
            )
            if requested:
                report.fits_requested.append(device.id)
        commit_and_send(session)
    if any(asdict(report).values()):
        log.info("reconcile: %s", report)
    return report


@celery_app.task(name=TIMEMODEL_FIT, ignore_result=True, **FIT_TIME_LIMITS_S)  # type: ignore[untyped-decorator]  # celery is untyped
def fit_task(device_id: int, force: bool = False) -> int | None:
    """``timemodel.fit(device_id, force=False)``: a new model version from all the device's
    samples; ``force`` fits even when no sample arrived since the last version."""
    return run_fit(device_id, force)


@celery_app.task(name=CAMPAIGN_ADAPT, ignore_result=True, **FIT_TIME_LIMITS_S)  # type: ignore[untyped-decorator]  # celery is untyped
def adapt_task(campaign_id: int) -> dict[str, Any]:
    """``campaign.adapt(campaign_id)``: plan and queue the campaign's adaptive round, once."""
    return asdict(run_adapt(campaign_id))


@celery_app.task(name=JOBS_RECONCILE, ignore_result=True)  # type: ignore[untyped-decorator]  # celery is untyped
def reconcile_task() -> dict[str, Any]:
    """``jobs.reconcile()``: re-send lost messages, requeue stale jobs, finish campaigns, fit."""
    return asdict(run_reconcile())
