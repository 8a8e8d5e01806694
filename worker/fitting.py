"""Fitting a device's time model from its stored samples, and validating it on whole networks."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from models.features import TFLiteParseError, parse_tflite
from models.timemodel import DeviceTimeModel, fit_device_model
from server.jobs.repository import network_jobs_with_results
from server.samples.repository import device_samples, sample_as_dict
from server.tables import Job, ModelVersion
from server.timemodels.repository import add_version, latest_version

log = logging.getLogger(__name__)

# Cross-validation folds for pruning and the reported per-op-type error (FastDeepIoT uses 5).
CV_FOLDS = 5


def json_safe(value: Any) -> Any:
    """``value`` with numpy scalars/arrays turned into Python and non-finite floats into None
    (JSONB holds neither NaN nor numpy types)."""
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def measured_network_ms(job: Job) -> float | None:
    """Median latency (ms) a network benchmark measured, from its result."""
    result = job.result or {}
    latency = result.get("latency", result)
    value = latency.get("median_ms") if isinstance(latency, Mapping) else None
    return float(value) if isinstance(value, int | float) else None


def validate_on_networks(model: DeviceTimeModel, jobs: Sequence[Job]) -> dict[str, Any]:
    """Measured vs predicted whole-network latency (ms) on the device's network benchmarks,
    with the mean absolute percentage error."""
    items: list[dict[str, Any]] = []
    for job in jobs:
        measured_ms = measured_network_ms(job)
        if measured_ms is None or not job.model_bytes:
            continue
        try:
            ops = parse_tflite(job.model_bytes)
        except TFLiteParseError:
            log.warning("network job %s no longer parses; left out of validation", job.id)
            continue
        predicted_ms = model.predict_network(ops).total_ms
        items.append(
            {
                "job_id": job.id,
                "name": job.model_name,
                "measured_ms": measured_ms,
                "predicted_ms": predicted_ms,
                "error_pct": 100.0 * abs(predicted_ms - measured_ms) / measured_ms,
            }
        )
    mape_pct = float(np.mean([i["error_pct"] for i in items])) if items else None
    return {"items": items, "mape_pct": mape_pct, "count": len(items)}


def fit_device(session: Session, device_id: int) -> ModelVersion | None:
    """Fit a new model version from all the device's samples; None when there is nothing new."""
    samples = device_samples(session, device_id)
    latest = latest_version(session, device_id)
    if not samples or (latest is not None and latest.sample_count == len(samples)):
        return None
    model, metrics = fit_device_model([sample_as_dict(s) for s in samples], cv=CV_FOLDS)
    all_metrics = dict(metrics)
    all_metrics["networks"] = validate_on_networks(
        model, network_jobs_with_results(session, device_id)
    )
    return add_version(
        session,
        device_id=device_id,
        tree=json_safe(model.to_dict()),
        metrics=json_safe(all_metrics),
        sample_count=len(samples),
        trained_at=datetime.now(UTC),
    )
