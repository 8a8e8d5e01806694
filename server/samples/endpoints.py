"""``POST /agent/jobs/{id}/samples``."""

from __future__ import annotations

from fastapi import APIRouter

from server.auth.dependencies import AgentDep
from server.db import SessionDep
from server.jobs.service import agent_job
from server.samples.schemas import SamplesAccepted, SamplesPost
from server.samples.service import store_samples

router = APIRouter(tags=["agent"])


@router.post("/agent/jobs/{job_id}/samples")
def post_samples(
    job_id: int, body: SamplesPost, session: SessionDep, principal: AgentDep
) -> SamplesAccepted:
    """Store measured samples; posting the same (job, index) again changes nothing."""
    job, _device = agent_job(session, job_id, principal)
    return store_samples(session, job, body)
