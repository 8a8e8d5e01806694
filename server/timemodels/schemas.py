"""Time model schemas."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel


class OpTypeModel(BaseModel):
    """One op type's tree (JSON) and its readable rules."""

    tree: dict[str, Any] | None
    rules: str


class FitRequested(BaseModel):
    """Answer of ``POST /models/{device_id}/fit``: whether a fit message was sent (False when
    one is already pending: that fit reads every sample too), and the version current now."""

    device_id: int
    requested: bool
    current_version: int | None


class ModelRead(BaseModel):
    device_id: int
    version: int
    trained_at: datetime
    sample_count: int
    overhead_ms: float | None
    metrics: dict[str, Any]
    # Network-level terms in words: invoke overhead, weight reload, DRAM floor ("" for versions
    # stored before they were exported).
    network_rules: str = ""
    op_types: dict[str, OpTypeModel]


class ModelExport(BaseModel):
    """Answer of ``GET /models/{device_id}/export``: the current version's whole model document,
    as :meth:`models.timemodel.DeviceTimeModel.from_dict` reads it (trees, network terms)."""

    device_id: int
    version: int
    trained_at: datetime
    model: dict[str, Any]


class VersionRead(BaseModel):
    version: int
    trained_at: datetime
    sample_count: int
    metrics: dict[str, Any]


class OpPrediction(BaseModel):
    index: int
    op_type: str
    config: dict[str, Any]
    predicted_ms: float
    fallback: bool
    # Why an op costs nothing (fused, an alias), more than alone (reload), or is priced by
    # another op type's tree (a one-pixel conv as the dense layer it runs as), from the model.
    note: str = ""
    # The part of predicted_ms spent reloading weights that the rest of the network evicted.
    reload_ms: float = 0.0


class Prediction(BaseModel):
    device_id: int
    version: int
    total_ms: float
    overhead_ms: float
    ops: list[OpPrediction]
    # The device speed the times are for: the canary level (ms) the model's labels were carried
    # to (models.timemodel.quiet_samples). A host timed at another speed state (a sample's or a
    # benchmark's state_canary_ms) runs state_canary_ms / reference_canary_ms times as long.
    # None for a model fitted before speed states.
    reference_canary_ms: float | None = None
    # How far to trust total_ms (models.timemodel.ErrorBand): the op types' cross-validated MAPE
    # (%) weighted by their share of this network's op time, and the predicted ms of op types
    # without one (fallbacks), which that band does not cover.
    expected_error_pct: float | None = None
    unvalidated_ms: float = 0.0
    # The version's own network-level validation: MAPE (%) over the device's benchmark networks
    # (worker.fitting.validate_on_networks), how many, and the share (%) of them whose error was
    # within their own error band (the band's calibration on this device); None and 0 before any
    # benchmark, and no share for versions fitted before it was kept.
    validation_mape_pct: float | None = None
    validation_networks: int = 0
    validation_within_band_pct: float | None = None
