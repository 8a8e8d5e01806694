"""Sample schemas (docs/internals.md, "Sample")."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field, model_validator

# A POST carries one job's worth of samples at most (campaign jobs hold tens of configs).
MAX_SAMPLES_PER_POST = 10_000
# A latency above one minute is no single op: a broken measurement.
MAX_LATENCY_MS = 60_000.0


class Latency(BaseModel):
    """Latency statistics over ``runs`` timed runs, in milliseconds."""

    median_ms: float = Field(gt=0, le=MAX_LATENCY_MS)
    p10_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)
    p90_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)
    std_ms: float | None = Field(default=None, ge=0, le=MAX_LATENCY_MS)
    runs: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> Latency:
        if self.p10_ms is not None and self.p90_ms is not None and self.p10_ms > self.p90_ms:
            raise ValueError("p10_ms must not exceed p90_ms")
        return self


class SampleIn(BaseModel):
    index: int = Field(ge=0)
    op_type: str = Field(min_length=1, max_length=64)
    config: dict[str, Any]
    features: dict[str, float]
    latency: Latency
    environment: dict[str, Any] = Field(default_factory=dict)


class SamplesPost(BaseModel):
    samples: list[SampleIn] = Field(max_length=MAX_SAMPLES_PER_POST)


class SamplesAccepted(BaseModel):
    """``inserted`` new rows; ``duplicates`` were already stored (a retried post)."""

    job_id: int
    inserted: int
    duplicates: int
    fit_requested: bool
