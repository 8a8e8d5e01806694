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
from models.opspace import (
    PROBE_OP_TYPES,
    RETIME_SHARE,
    adaptive_configs,
    config_key,
    measured_more_than_once,
    relative_residuals,
    retime_configs,
)
from models.timemodel import (
    DeviceTimeModel,
    error_band,
    fit_device_model,
    quiet_samples,
    speed_at,
    within_band_pct,
)
from server.jobs.planning import CHAIN_OP_TYPE, split_adaptive_budget, with_probe_layers
from server.jobs.repository import network_jobs_with_results
from server.samples.repository import device_samples, fit_start_campaign, sample_as_dict
from server.tables import Campaign, Job, ModelVersion
from server.timemodels.repository import (
    FIT_START_METRIC,
    add_version,
    fitted_sample_count,
    latest_version,
)

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


def validate_on_networks(
    model: DeviceTimeModel,
    jobs: Sequence[Job],
    reference_canary_ms: float | None = None,
    per_op_type: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Measured vs predicted whole-network latency (ms) on the device's network benchmarks,
    with the mean absolute percentage error. The prediction is at the speed each network was
    timed at (:func:`models.timemodel.speed_at` against the model's ``reference_canary_ms``).

    With the fit's ``per_op_type`` metrics, each network also gets the error band a prediction
    of it is served with (:func:`models.timemodel.error_band`), and ``within_band_pct`` says how
    many of the networks fell within their band: the band's calibration on this very version,
    which falls where the error is systematic rather than op noise (``bench.error_band``)."""
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
        speed = speed_at((job.result or {}).get("environment"), reference_canary_ms)
        prediction = model.predict_network(ops)
        predicted_ms = prediction.total_ms * speed
        item: dict[str, Any] = {
            "job_id": job.id,
            "name": job.model_name,
            "measured_ms": measured_ms,
            "predicted_ms": predicted_ms,
            "speed": speed,
            "error_pct": 100.0 * abs(predicted_ms - measured_ms) / measured_ms,
        }
        if per_op_type is not None:
            band = error_band(prediction.by_op_type_ms(), per_op_type)
            item["expected_error_pct"] = band.expected_error_pct
        items.append(item)
    mape_pct = float(np.mean([i["error_pct"] for i in items])) if items else None
    banded = [i for i in items if i.get("expected_error_pct") is not None]
    return {
        "items": items,
        "mape_pct": mape_pct,
        "count": len(items),
        "within_band_pct": within_band_pct(
            [i["error_pct"] for i in banded], [i["expected_error_pct"] for i in banded]
        ),
    }


def fit_device(session: Session, device_id: int, *, force: bool = False) -> ModelVersion | None:
    """Fit a new model version from the device's samples (all of them, or those from its latest
    fresh campaign on); None when there is nothing new (``force`` fits anyway, if there is any
    sample). The version's metrics record that campaign (``fit_start_campaign``)."""
    samples = device_samples(session, device_id)  # from the latest fresh campaign, if any
    start = fit_start_campaign(session, device_id)
    unchanged = fitted_sample_count(latest_version(session, device_id), start) == len(samples)
    if not samples or (unchanged and not force):
        return None
    # The agents' canary limit, applied again against the device's quietest canary of all samples.
    model, metrics = fit_device_model(
        [sample_as_dict(s) for s in samples],
        cv=CV_FOLDS,
        max_canary_ratio=get_settings().max_canary_ratio,
    )
    all_metrics = dict(metrics)
    all_metrics[FIT_START_METRIC] = start
    all_metrics["networks"] = validate_on_networks(
        model,
        network_jobs_with_results(session, device_id),
        metrics.get("reference_canary_ms"),
        metrics.get("per_op_type") or {},
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


# At most this share of an adaptive round goes to measuring the probes again (each with its
# layers): the default round of 740 needs ~190 for its ~64 probes, the 800-sample demo's round of
# 160 would need ~80 for its 26; the rest proposes and re-times op samples.
PROBE_RETIME_MAX_SHARE = 0.5


def probe_retimes(
    probes: Sequence[Mapping[str, Any]], budget: int
) -> list[tuple[str, dict[str, Any]]]:
    """The ``conv_chain`` probes to measure again, each followed by its layers alone
    (:func:`server.jobs.planning.with_probe_layers`), as many as ``budget`` samples hold: the
    newest first, each configuration once, none already measured more than once.

    A probe's label sets the network extra curve and the reload rate where it lies
    (models.timemodel.chain_extra_from_probes): one probe timed in a busy stretch read +32-35%
    where the networks beside it paid +5.5-13.7% (2026-11-30 16:33 campaign). Networks are
    measured as the fastest of 3 rounds; measured again minutes later, a probe and its layers
    get the fastest of two (models.timemodel.fastest_per_config).
    """
    twice = measured_more_than_once(probes)
    out: list[tuple[str, dict[str, Any]]] = []
    chosen: set[tuple[tuple[str, Any], ...]] = set()
    for p in reversed(probes):
        key = config_key(p["config"])
        if key in twice or key in chosen:
            continue
        with_layers = with_probe_layers([(CHAIN_OP_TYPE, dict(p["config"]))])
        if len(out) + len(with_layers) > budget:
            break
        chosen.add(key)
        out.extend(with_layers)
    return out


def plan_adaptive_round(session: Session, campaign: Campaign) -> list[tuple[str, dict[str, Any]]]:
    """The configurations of ``campaign``'s adaptive round: ``campaign.adaptive_samples`` of them.

    1. The device's ``conv_chain`` probes measured again with their layers (:func:`probe_retimes`,
       up to :data:`PROBE_RETIME_MAX_SHARE` of the round) when the campaign profiles them.
    2. The rest split across the campaign's other op types, each op type weighed by samples x
       cross-validated MAPE of the latest model version: the sum of its samples' relative
       errors, i.e. how much error there is to remove. Error alone would pour the budget into a
       rare op type with a handful of noisy samples; sample count alone would just repeat the
       first round. Op types the model has no error for yet get the mean error of the others (1
       when there is none: then the split is by sample count).
    3. Of each op type's share, :data:`models.opspace.RETIME_SHARE` measures again the samples
       that ran slowest against their cross-validated prediction
       (:func:`models.opspace.retime_configs`); the rest are new configurations drawn by
       :func:`models.opspace.adaptive_configs` around the worst samples.

    Only quiet samples (models.timemodel.quiet_samples) are ranked. Shuffled with the campaign's
    seed so that every job mixes op types; each probe stays followed by its layers.
    """
    all_samples = [sample_as_dict(s) for s in device_samples(session, campaign.device_id)]
    quiet, _ = quiet_samples(all_samples)
    by_type: dict[str, list[dict[str, Any]]] = {}
    for sample in quiet:
        by_type.setdefault(str(sample["op_type"]), []).append(dict(sample))
    probes: list[tuple[str, dict[str, Any]]] = []
    if CHAIN_OP_TYPE in campaign.op_types:
        probes = probe_retimes(
            by_type.get(CHAIN_OP_TYPE, []),
            int(campaign.adaptive_samples * PROBE_RETIME_MAX_SHARE),
        )
    by_type = {
        t: samples
        for t, samples in by_type.items()
        if t in campaign.op_types and t not in PROBE_OP_TYPES
    }
    errors = op_type_errors(session, campaign.device_id)
    known = [errors[t] for t in by_type if t in errors]
    fallback_error = float(np.mean(known)) if known else 1.0
    weights = {t: len(samples) * errors.get(t, fallback_error) for t, samples in by_type.items()}
    if not any(w > 0 for w in weights.values()):  # every error is 0: split by sample count
        weights = {t: float(len(samples)) for t, samples in by_type.items()}
    budget = split_adaptive_budget(weights, max(0, campaign.adaptive_samples - len(probes)))
    drawn: list[tuple[str, dict[str, Any]]] = []
    retimed: dict[str, int] = {}
    for op_type, n in budget.items():
        own = by_type[op_type]
        residuals = relative_residuals(op_type, own, campaign.seed)
        again = retime_configs(own, residuals, round(n * RETIME_SHARE))
        configs = adaptive_configs(
            op_type, own, n - len(again), campaign.seed, relative_errors=np.abs(residuals)
        )
        retimed[op_type] = len(again)
        drawn.extend((op_type, config) for config in [*again, *configs])
    # Probes enter the shuffle alone and get their layers back right after it.
    probe_configs = [(t, c) for t, c in probes if t == CHAIN_OP_TYPE]
    drawn.extend(probe_configs)
    random.Random(campaign.seed).shuffle(drawn)
    drawn = with_probe_layers(drawn)
    log.info(
        "campaign %s: adaptive round %s, measured again %s and %d probes",
        campaign.id,
        budget,
        retimed,
        len(probe_configs),
    )
    return drawn
