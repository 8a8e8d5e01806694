"""Campaign and job schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field, field_validator

from fdiot.settings import get_settings
from models.opspace import OP_TYPES

# Bound on an error message an agent may post (a Python traceback fits easily).
MAX_ERROR_CHARS = 20_000
# Seeds are stored as BIGINT and fed to numpy's generator.
MAX_SEED = 2**62


class OpConfigIn(BaseModel):
    op_type: str
    config: dict[str, Any]


class CampaignCreate(BaseModel):
    """``samples`` is bounded by ``FDIOT_MAX_CAMPAIGN_SAMPLES``; ``op_types`` default to all."""

    op_types: list[str] | None = Field(default=None, min_length=1, max_length=len(OP_TYPES))
    samples: int | None = Field(default=None, ge=1)
    seed: int | None = Field(default=None, ge=0, le=MAX_SEED)
    # Explicit configurations to measure besides the sampled ones (validated against the op space).
    configs: list[OpConfigIn] | None = Field(default=None, max_length=10_000)
    # Samples (out of ``samples``) kept for the adaptive round; default FDIOT_ADAPTIVE_FRACTION of
    # campaigns of at least FDIOT_ADAPTIVE_MIN_CAMPAIGN_SAMPLES; 0 disables the round.
    adaptive_samples: int | None = Field(default=None, ge=0)
    # Device-time budget in minutes of measuring; default FDIOT_DEFAULT_CAMPAIGN_DEVICE_MINUTES,
    # 0: no limit. Once spent, the campaign's remaining jobs are skipped and it finishes.
    max_device_minutes: float | None = Field(default=None, ge=0)
    # Start the device's samples over: its models are fitted on this campaign's samples and
    # later ones only (the older ones stay stored). For a device whose speed changed.
    fresh: bool = False

    @field_validator("op_types")
    @classmethod
    def _known_op_types(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        unknown = [t for t in value if t not in OP_TYPES]
        if unknown:
            raise ValueError(f"unknown op types {unknown}; known: {', '.join(OP_TYPES)}")
        return list(dict.fromkeys(value))  # drop repeats, keep order

    @field_validator("samples")
    @classmethod
    def _bounded_samples(cls, value: int | None) -> int | None:
        limit = get_settings().max_campaign_samples
        if value is not None and value > limit:
            raise ValueError(f"at most {limit} samples per campaign (FDIOT_MAX_CAMPAIGN_SAMPLES)")
        return value

    @field_validator("max_device_minutes")
    @classmethod
    def _bounded_minutes(cls, value: float | None) -> float | None:
        limit = get_settings().max_campaign_device_minutes
        if value is not None and value > limit:
            raise ValueError(
                f"at most {limit:g} minutes per campaign (FDIOT_MAX_CAMPAIGN_DEVICE_MINUTES)"
            )
        return value


class CampaignRead(BaseModel):
    id: int
    device_id: int
    status: str
    op_types: list[str]
    plan: dict[str, int]
    seed: int
    samples_requested: int
    samples_done: int
    # Samples the agent measured on a disturbed host (slow canary, or its core shared) after every
    # attempt: stored, but left out of the fit. A large share means a noisy host.
    samples_disturbed: int
    jobs_total: int
    jobs_done: int
    jobs_failed: int
    job_ids: list[int]
    # Budget of the adaptive round (0: none) and when it was planned (None: not yet, or none).
    # samples_requested and plan grow by the adaptive samples once it was planned.
    adaptive_samples: int
    adapted_at: datetime | None
    # Device-time budget (None: no limit), the device time its samples took so far (minutes of
    # measuring), and the jobs skipped because the budget was spent (counted in jobs_done).
    max_device_minutes: float | None
    device_minutes: float
    jobs_skipped: int
    # Whether this campaign started the device's samples over (see CampaignCreate.fresh).
    fresh: bool
    created_at: datetime
    finished_at: datetime | None


class JobRead(BaseModel):
    id: int
    kind: str
    status: str
    device_id: int
    campaign_id: int | None
    name: str | None
    model_sha256: str | None
    configs_total: int
    error: str | None
    result: dict[str, Any] | None
    attempts: int
    created_at: datetime
    enqueued_at: datetime | None
    started_at: datetime | None
    heartbeat_at: datetime | None
    finished_at: datetime | None


class AgentJobRead(BaseModel):
    """What an agent needs to run a job; ``done_indices`` lets a re-run skip measured configs."""

    id: int
    kind: str
    device_id: int
    status: str
    attempts: int
    configs: list[dict[str, Any]]
    done_indices: list[int]
    model_sha256: str | None
    name: str | None
    # Device time (s) this job may still use before its campaign's budget is spent (the agent
    # stops measuring there); None: no budget. Zero or less: measure nothing.
    device_s_left: float | None = None


class JobComplete(BaseModel):
    result: dict[str, Any] | None = None


class JobFail(BaseModel):
    error: str = Field(min_length=1, max_length=MAX_ERROR_CHARS)
