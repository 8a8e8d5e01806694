"""Fitting a device's time model from its stored samples, and validating it on whole networks."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from fdiot.settings import get_settings
from models.features import TFLiteParseError, parse_tflite
from models.opspace import PROBE_OP_TYPES, adaptive_configs
from models.timemodel import DeviceTimeModel, fit_device_model
from server.jobs.planning import split_adaptive_budget
from server.jobs.repository import network_jobs_with_results
from server.samples.repository import device_samples, sample_as_dict
from server.tables import Campaign, Job, ModelVersion
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


def fit_device(session: Session, device_id: int, *, force: bool = False) -> ModelVersion | None:
    """Fit a new model version from all the device's samples; None when there is nothing new
    (``force`` fits anyway, if there is any sample)."""
    samples = device_samples(session, device_id)
    latest = latest_version(session, device_id)
    unchanged = latest is not None and latest.sample_count == len(samples)
    if not samples or (unchanged and not force):
        return None
    # The agents' canary limit, applied again against the device's quietest canary of all samples.
    model, metrics = fit_device_model(
        [sample_as_dict(s) for s in samples],
        cv=CV_FOLDS,
        max_canary_ratio=get_settings().max_canary_ratio,
    )
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


def op_type_errors(session: Session, device_id: int) -> dict[str, float]:
    """Cross-validated MAPE per op type of the device's latest model version (those it has)."""
    latest = latest_version(session, device_id)
    per_op = (latest.metrics or {}).get("per_op_type", {}) if latest is not None else {}
    errors: dict[str, float] = {}
    for op_type, metrics in per_op.items():
        value = metrics.get("cv_mape") if isinstance(metrics, Mapping) else None
        if isinstance(value, int | float) and math.isfinite(value):
            errors[op_type] = float(value)
    return errors


def plan_adaptive_round(session: Session, campaign: Campaign) -> list[tuple[str, dict[str, Any]]]:
    """The configurations of ``campaign``'s adaptive round: ``campaign.adaptive_samples`` of them,
    split across its op types, drawn by :func:`models.opspace.adaptive_configs` from all the
    device's samples, shuffled with the campaign's seed so that every job mixes op types.

    The split weighs each op type by samples x cross-validated MAPE of the latest model version:
    the sum of its samples' relative errors, i.e. how much error there is to remove. Error alone
    would pour the budget into a rare op type with a handful of noisy samples; sample count alone
    would just repeat the first round. Op types the model has no error for yet get the mean error
    of the others (1 when there is none: then the split is by sample count). The probes
    (``invoke_overhead``, ``conv_chain``) have no per-op error to chase and get none.
    """
    by_type: dict[str, list[dict[str, Any]]] = {}
    for op_type in campaign.op_types:
        if op_type in PROBE_OP_TYPES:
            continue
        samples = [sample_as_dict(s) for s in device_samples(session, campaign.device_id, op_type)]
        if samples:
            by_type[op_type] = samples
    errors = op_type_errors(session, campaign.device_id)
    known = [errors[t] for t in by_type if t in errors]
    fallback_error = float(np.mean(known)) if known else 1.0
    weights = {t: len(samples) * errors.get(t, fallback_error) for t, samples in by_type.items()}
    if not any(w > 0 for w in weights.values()):  # every error is 0: split by sample count
        weights = {t: float(len(samples)) for t, samples in by_type.items()}
    budget = split_adaptive_budget(weights, campaign.adaptive_samples)
    drawn: list[tuple[str, dict[str, Any]]] = []
    for op_type, n in budget.items():
        configs = adaptive_configs(op_type, by_type[op_type], n, campaign.seed)
        drawn.extend((op_type, config) for config in configs)
    random.Random(campaign.seed).shuffle(drawn)
    log.info("campaign %s: adaptive round %s", campaign.id, budget)
    return drawn
