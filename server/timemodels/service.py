"""Device time models: asking for fits, reading versions, predicting uploaded networks, plots.

Prediction uses :mod:`models` with numpy alone (no TensorFlow in the server).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from datetime import timedelta
from threading import Lock
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from fdiot.celery_config import FIT_TIME_LIMIT_S
from fdiot.settings import get_settings
from models.features import TFLiteParseError, parse_tflite
from server.db import send_after_commit
from server.devices import repository as devices_repository
from server.devices.service import device_or_404
from server.errors import conflict, field_error, not_found
from server.samples import repository as samples_repository
from server.tables import Campaign, ModelVersion
from server.timemodels import repository
from server.timemodels.schemas import (
    FitRequested,
    ModelExport,
    ModelRead,
    OpPrediction,
    OpTypeModel,
    Prediction,
    VersionRead,
)
from worker.queues import FIT_QUEUE, TIMEMODEL_FIT

if TYPE_CHECKING:
    from models.timemodel import DeviceTimeModel

# -- asking for fits -----------------------------------------------------------------------------


def new_samples_since_last_fit(session: Session, device_id: int) -> int:
    """Op samples stored for the device beyond those its latest model version was fitted on."""
    start = samples_repository.fit_start_campaign(session, device_id)
    fitted = repository.fitted_sample_count(repository.latest_version(session, device_id), start)
    return samples_repository.count_device_samples(session, device_id) - fitted


def request_fit(session: Session, device_id: int, *, force: bool = False) -> bool:
    """Send ``timemodel.fit(device_id, force)`` after commit unless one is already pending.

    A pending request older than the fit's time limit is taken as lost (its worker died) and
    replaced. ``force`` refits even when no sample arrived since the last version (after an
    upgrade of the model code). Returns True when a message will be sent.
    """
    now = session.scalar(select(func.now()))
    assert now is not None
    stale_before = now - timedelta(seconds=FIT_TIME_LIMIT_S)
    if not devices_repository.claim_fit_request(session, device_id, stale_before):
        return False
    send_after_commit(session, TIMEMODEL_FIT, (device_id, force), FIT_QUEUE)
    return True


def request_refit(session: Session, device_id: int) -> FitRequested:
    """``POST /models/{device_id}/fit``: a new version from the stored samples, new or not."""
    device_or_404(session, device_id)
    if samples_repository.count_device_samples(session, device_id) == 0:
        raise conflict(f"device {device_id} has no samples to fit on yet")
    latest = repository.latest_version(session, device_id)
    sent = request_fit(session, device_id, force=True)
    return FitRequested(
        device_id=device_id,
        requested=sent,
        current_version=None if latest is None else latest.version,
    )


def fit_due(session: Session, device_id: int) -> bool:
    """Due when ``fit_every_samples`` new samples arrived, or when some did and no campaign of
    the device is still running (its last samples must not wait for the next campaign)."""
    new = new_samples_since_last_fit(session, device_id)
    if new >= get_settings().fit_every_samples:
        return True
    if new <= 0:
        return False
    running = session.scalar(
        select(func.count(Campaign.id)).where(
            Campaign.device_id == device_id, Campaign.status == "running"
        )
    )
    return not running


def request_fit_if_due(session: Session, device_id: int) -> bool:
    return fit_due(session, device_id) and request_fit(session, device_id)


# -- reading versions ----------------------------------------------------------------------------

# Parsed models by (device_id, version): a version never changes once written.
_MODEL_CACHE_SIZE = 32
_model_cache: OrderedDict[tuple[int, int], DeviceTimeModel] = OrderedDict()
_model_cache_lock = Lock()


def load_model(version: ModelVersion) -> DeviceTimeModel:
    """The version's :class:`DeviceTimeModel`, cached by (device, version)."""
    key = (version.device_id, version.version)
    with _model_cache_lock:
        cached = _model_cache.get(key)
        if cached is not None:
            _model_cache.move_to_end(key)
            return cached
    # Imported on first use: the tree code (scikit-learn) is not needed to serve devices and jobs.
    from models.timemodel import DeviceTimeModel

    model = DeviceTimeModel.from_dict(version.tree)
    with _model_cache_lock:
        _model_cache[key] = model
        while len(_model_cache) > _MODEL_CACHE_SIZE:
            _model_cache.popitem(last=False)
    return model


def current_version_or_404(session: Session, device_id: int) -> ModelVersion:
    device_or_404(session, device_id)
    version = repository.latest_version(session, device_id)
    if version is None:
        raise not_found("time model of device", device_id)
    return version


def model_read(version: ModelVersion) -> ModelRead:
    # The stored JSON (DeviceTimeModel.to_dict) already holds the rules and the overhead: a
    # dashboard polling this route never needs the trees rebuilt.
    entries: Mapping[str, Any] = version.tree.get("op_types", {})
    op_types = {
        op_type: OpTypeModel(tree=entry.get("tree"), rules=entry["rules"])
        for op_type, entry in entries.items()
    }
    return ModelRead(
        device_id=version.device_id,
        version=version.version,
        trained_at=version.trained_at,
        sample_count=version.sample_count,
        overhead_ms=float(version.tree["overhead_ms"]),
        metrics=version.metrics,
        network_rules=str(version.tree.get("network_rules", "")),
        op_types=op_types,
    )


def model_export(version: ModelVersion) -> ModelExport:
    """The version's stored model document, whole (what :meth:`DeviceTimeModel.from_dict`
    reads), with its device, version and training time."""
    return ModelExport(
        device_id=version.device_id,
        version=version.version,
        trained_at=version.trained_at,
        model=dict(version.tree),
    )


def versions_read(session: Session, device_id: int) -> list[VersionRead]:
    device_or_404(session, device_id)
    return [
        VersionRead(
            version=v.version,
            trained_at=v.trained_at,
            sample_count=v.sample_count,
            metrics=v.metrics,
        )
        for v in repository.list_versions(session, device_id)
    ]


# -- prediction and plots ------------------------------------------------------------------------


def predict_upload(session: Session, device_id: int, content: bytes) -> Prediction:
    """Per-op predicted times of an uploaded .tflite network on the device's current model."""
    version = current_version_or_404(session, device_id)
    try:
        ops = parse_tflite(content)
    except TFLiteParseError as exc:
        raise field_error(("body", "file"), f"not a TFLite model: {exc}") from exc
    model = load_model(version)
    from models.timemodel import error_band  # loaded with the model: see load_model

    predicted = model.predict_network(ops)
    metrics: Mapping[str, Any] = version.metrics or {}
    band = error_band(predicted.by_op_type_ms(), metrics.get("per_op_type") or {})
    validation: Mapping[str, Any] = metrics.get("networks") or {}
    return Prediction(
        device_id=device_id,
        version=version.version,
        total_ms=predicted.total_ms,
        overhead_ms=predicted.overhead_ms,
        ops=[OpPrediction.model_validate(op.to_dict()) for op in predicted.ops],
        reference_canary_ms=metrics.get("reference_canary_ms"),
        expected_error_pct=band.expected_error_pct,
        unvalidated_ms=band.unvalidated_ms,
        validation_mape_pct=validation.get("mape_pct"),
        validation_networks=int(validation.get("count") or 0),
        validation_within_band_pct=validation.get("within_band_pct"),
    )


def conv2d_plot_png(session: Session, device_id: int) -> bytes:
    """PNG of measured vs predicted conv2d latency across output channels."""
    from models.plots import conv_channel_plot_png  # matplotlib: imported on demand

    version = current_version_or_404(session, device_id)
    samples = [
        samples_repository.sample_as_dict(s)
        for s in samples_repository.device_samples(session, device_id, "conv2d")
    ]
    png: bytes = conv_channel_plot_png(samples, load_model(version))
    return png
