"""Campaigns, network benchmarks, jobs, and the agent's job routes."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from fdiot.settings import get_settings
from server.auth.dependencies import AgentDep, ClientDep
from server.db import SessionDep
from server.errors import not_found
from server.jobs import repository, service
from server.jobs.schemas import (
    AgentJobRead,
    CampaignCreate,
    CampaignRead,
    JobComplete,
    JobFail,
    JobRead,
)
from server.uploads import multipart_openapi, read_tflite_upload

router = APIRouter(tags=["jobs"])
agent_router = APIRouter(tags=["agent"])


@router.post("/devices/{device_id}/campaigns", status_code=status.HTTP_202_ACCEPTED)
def create_campaign(
    device_id: int, body: CampaignCreate, session: SessionDep, _client: ClientDep
) -> CampaignRead:
    """Plan a profiling campaign and queue its jobs on the device."""
    campaign = service.create_campaign(session, get_settings(), device_id, body)
    return service.campaign_read(session, campaign)


@router.get("/campaigns/{campaign_id}")
def get_campaign(campaign_id: int, session: SessionDep) -> CampaignRead:
    return service.campaign_read(session, service.campaign_or_404(session, campaign_id))


@router.post(
    "/devices/{device_id}/benchmarks",
    status_code=status.HTTP_202_ACCEPTED,
    openapi_extra=multipart_openapi({"name": {"type": "string"}}),
)
async def create_benchmark(
    device_id: int, request: Request, session: SessionDep, _client: ClientDep
) -> JobRead:
    """Upload a .tflite network (multipart field ``file``, optional ``name``) to be measured."""
    upload = await read_tflite_upload(request)
    name = upload.fields.get("name") or upload.filename
    job = await run_in_threadpool(
        service.create_benchmark, session, device_id, upload.content, name
    )
    return service.job_read(job)


@router.get("/jobs/{job_id}")
def get_job(job_id: int, session: SessionDep) -> JobRead:
    return service.job_read(service.job_or_404(session, job_id))


@agent_router.get("/agent/jobs/{job_id}")
def agent_get_job(job_id: int, session: SessionDep, principal: AgentDep) -> AgentJobRead:
    """The job's configurations and the indices already measured."""
    job, _device = service.agent_job(session, job_id, principal)
    return service.agent_job_read(session, job)


@agent_router.get(
    "/agent/jobs/{job_id}/model",
    response_class=Response,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
def agent_get_model(job_id: int, session: SessionDep, principal: AgentDep) -> Response:
    """The uploaded .tflite bytes of a network job."""
    job, _device = service.agent_job(session, job_id, principal)
    content = repository.get_job_model_bytes(session, job.id)
    if content is None:
        raise not_found("model of job", job_id)
    return Response(content, media_type="application/octet-stream")


@agent_router.post("/agent/jobs/{job_id}/start")
def agent_start_job(job_id: int, session: SessionDep, principal: AgentDep) -> JobRead:
    """Mark the job running and count the attempt (409 if it already finished)."""
    job, _device = service.agent_job(session, job_id, principal)
    service.start_job(session, job)
    return service.job_read(job)


@agent_router.post("/agent/jobs/{job_id}/complete")
def agent_complete_job(
    job_id: int, body: JobComplete, session: SessionDep, principal: AgentDep
) -> JobRead:
    job, _device = service.agent_job(session, job_id, principal)
    service.complete_job(session, job, body.result)
    return service.job_read(job)


@agent_router.post("/agent/jobs/{job_id}/fail")
def agent_fail_job(job_id: int, body: JobFail, session: SessionDep, principal: AgentDep) -> JobRead:
    job, _device = service.agent_job(session, job_id, principal)
    service.fail_job(session, job, body.error)
    return service.job_read(job)
