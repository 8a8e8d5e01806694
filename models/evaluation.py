"""Accuracy measures and the baselines the benchmark compares the FastDeepIoT trees against.

Every model here has ``predict_network(ops) -> NetworkPrediction`` like
:class:`models.timemodel.DeviceTimeModel`, so a benchmark can loop over them. All are fitted on the
same Sample dicts, subtract the same invoke overhead, treat fused/aliased ops the same way and
apply the same weight-streaming floor and weight-reload time (each with its own conv predictions
under the ``conv_chain`` probes) in networks larger than the cache; only the per-op regressor
differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike
from sklearn.ensemble import GradientBoostingRegressor, RandomForestRegressor
from sklearn.linear_model import LinearRegression

from models.features import OpInstance, cost_features
from models.opspace import OP_TYPES, PROBE_OP_TYPES
from models.timemodel import (
    MIN_SAMPLES_FOR_TREE,
    DeviceTimeModel,
    NetworkPrediction,
    _fallback_rates,
    build_design,
    chain_extra_from_probes,
    chain_extra_knots,
    chain_probe_times,
    estimate_overhead_ms,
    estimate_weight_streaming,
    fit_device_model,
    fit_weights,
    fitting_samples,
    op_feature_vector,
    reload_rate_from_probes,
)


def mape(measured: ArrayLike, predicted: ArrayLike) -> float:
    """Mean absolute percentage error as a fraction (0.05 = 5%)."""
    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if m.shape != p.shape or m.size == 0:
        raise ValueError("measured and predicted must be non-empty and of equal length")
    return float(np.mean(np.abs(p - m) / m))


def within_fraction(measured: ArrayLike, predicted: ArrayLike, tol: float) -> float:
    """Share of predictions within ``tol`` relative error of the measurement (tol=0.1: ±10%)."""
    m = np.asarray(measured, dtype=float)
    p = np.asarray(predicted, dtype=float)
    if m.shape != p.shape or m.size == 0:
        raise ValueError("measured and predicted must be non-empty and of equal length")
    return float(np.mean(np.abs(p - m) / m <= tol))


class NetworkPredictor(Protocol):
    """Anything that predicts a parsed network's latency."""

    def predict_network(self, ops: Sequence[OpInstance]) -> NetworkPrediction: ...


class _PerOpModel(DeviceTimeModel):
    """A DeviceTimeModel whose per-op regressor is any callable (op_type, row, feats) -> ms."""

    def __init__(
        self,
        regressors: Mapping[str, Callable[[np.ndarray, Mapping[str, float]], float]],
        overhead_ms: float,
        variant: str,
        ms_per_byte: float,
        ms_per_flop: float,
        cache_bytes: float | None = None,
        dram_ms_per_param_byte: float | None = None,
    ) -> None:
        super().__init__(
            {},
            overhead_ms,
            variant,
            ms_per_byte,
            ms_per_flop,
            cache_bytes,
            dram_ms_per_param_byte,
        )
        self.regressors = dict(regressors)

    def predict_op(
        self, op_type: str, config: Mapping[str, Any], features: Mapping[str, float] | None = None
    ) -> tuple[float, bool]:
        regressor = self.regressors.get(op_type)
        feats = dict(features) if features is not None else None
        if regressor is not None:
            try:
                if feats is None:
                    feats = cost_features(op_type, config)
                row = op_feature_vector(op_type, config, feats, self.variant)
                return max(regressor(row, feats), 0.0), False
            except (KeyError, ValueError, TypeError):
                pass
        return self._fallback_ms(op_type, feats or {}), True


def _grouped(samples: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    for s in samples:
        out.setdefault(str(s["op_type"]), []).append(s)
    return out


def _affine_flops(a: float, b: float) -> Callable[[np.ndarray, Mapping[str, float]], float]:
    def predict(row: np.ndarray, feats: Mapping[str, float]) -> float:
        return a * float(feats["flops"]) + b

    return predict


def _row_regressor(
    estimator: Any, log_target: bool = False
) -> Callable[[np.ndarray, Mapping[str, float]], float]:
    def predict(row: np.ndarray, feats: Mapping[str, float]) -> float:
        value = float(estimator.predict(row[None, :])[0])
        return float(np.exp(value)) if log_target else value

    return predict


def fit_flops_model(samples: Sequence[Mapping[str, Any]]) -> DeviceTimeModel:
    """Baseline: per op type ``t = a * flops + b`` by weighted least squares (relative error)."""
    overhead = estimate_overhead_ms(samples)
    by_type = _grouped(samples)
    regressors: dict[str, Callable[[np.ndarray, Mapping[str, float]], float]] = {}
    for op_type, own in by_type.items():
        if op_type in PROBE_OP_TYPES or op_type not in OP_TYPES or len(own) < 2:
            continue
        X, y, _ = build_design(op_type, own, overhead, "paper")
        flops = X[:, 0]
        sw = np.sqrt(fit_weights(y, overhead))
        A = np.c_[flops, np.ones_like(flops)] * sw[:, None]
        (a, b), *_ = np.linalg.lstsq(A, y * sw, rcond=None)
        regressors[op_type] = _affine_flops(float(a), float(b))
    model = _PerOpModel(
        regressors,
        overhead,
        "paper",
        *_fallback_rates(by_type, overhead),
        *estimate_weight_streaming(samples, overhead),
    )
    return _with_reload(model, by_type)


def fit_sklearn_model(
    samples: Sequence[Mapping[str, Any]],
    make_estimator: Callable[[], Any],
    variant: str = "tiled",
    log_target: bool = False,
) -> DeviceTimeModel:
    """Baseline: one scikit-learn regressor per op type over :func:`op_feature_vector` rows.

    With ``log_target`` the estimator is fitted unweighted on ``log(op ms)`` and its prediction
    exponentiated: relative error for tree ensembles. (Weighting their rows by ``1/y**2``
    instead, as the linear models are, makes every leaf a weighted mean dominated by its
    fastest sample: the forest then under-predicted every network by 17-99%.)
    """
    overhead = estimate_overhead_ms(samples)
    by_type = _grouped(samples)
    regressors: dict[str, Callable[[np.ndarray, Mapping[str, float]], float]] = {}
    for op_type, own in by_type.items():
        if op_type in PROBE_OP_TYPES or op_type not in OP_TYPES:
            continue
        if len(own) < MIN_SAMPLES_FOR_TREE:
            continue
        X, y, _ = build_design(op_type, own, overhead, variant)
        estimator = make_estimator()
        if log_target:
            estimator.fit(X, np.log(y))
        else:
            estimator.fit(X, y, sample_weight=fit_weights(y, overhead))
        regressors[op_type] = _row_regressor(estimator, log_target)
    model = _PerOpModel(
        regressors,
        overhead,
        variant,
        *_fallback_rates(by_type, overhead),
        *estimate_weight_streaming(samples, overhead),
    )
    return _with_reload(model, by_type)


def _with_reload(
    model: _PerOpModel, by_type: Mapping[str, Sequence[Mapping[str, Any]]]
) -> _PerOpModel:
    """Set the baseline's weight-reload rate and network extra curve from the probes, under its
    own conv predictions."""
    probes = chain_probe_times(by_type.get("conv_chain", []), model)
    model.reload_ms_per_param_byte = reload_rate_from_probes(probes, model)["ms_per_param_byte"]
    model.chain_extra = chain_extra_knots(chain_extra_from_probes(probes, model))
    return model


def fit_baselines(
    samples: Sequence[Mapping[str, Any]], *, seed: int = 0, cv: int = 5
) -> dict[str, NetworkPredictor]:
    """The benchmark's comparison models, all fitted on ``samples``.

    ``flops`` (per-op-type a*flops+b), ``linear`` (linear regression on the tree's features),
    ``random_forest`` (nn-Meter's choice), ``gradient_boosting``, and ``paper_tree`` (the
    FastDeepIoT tree with the paper's cost features only).
    """
    # The same samples the tree fits on (fitting_samples).
    samples, _, _ = fitting_samples(samples)
    paper, _ = fit_device_model(samples, variant="paper", cv=cv, seed=seed)
    return {
        "flops": fit_flops_model(samples),
        "linear": fit_sklearn_model(samples, LinearRegression),
        # nn-Meter's per-kernel random forest, on the same features, in log space.
        "random_forest": fit_sklearn_model(
            samples,
            lambda: RandomForestRegressor(n_estimators=100, random_state=seed),
            log_target=True,
        ),
        "gradient_boosting": fit_sklearn_model(
            samples,
            lambda: GradientBoostingRegressor(n_estimators=200, random_state=seed),
            log_target=True,
        ),
        "paper_tree": paper,
    }
