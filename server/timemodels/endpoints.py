"""``/models/{device_id}``: current version, history, prediction, plots."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from fastapi.concurrency import run_in_threadpool

from server.auth.dependencies import ClientDep
from server.db import SessionDep
from server.timemodels import service
from server.timemodels.schemas import (
    FitRequested,
    ModelExport,
    ModelRead,
    Prediction,
    VersionRead,
)
from server.uploads import multipart_openapi, read_tflite_upload

router = APIRouter(tags=["time models"])


@router.get("/models/{device_id}")
def get_model(device_id: int, session: SessionDep) -> ModelRead:
    """The device's current time-model version; 404 before its first fit."""
    return service.model_read(service.current_version_or_404(session, device_id))


@router.get("/models/{device_id}/export")
def export_model(device_id: int, session: SessionDep) -> ModelExport:
    """The device's current time model whole: the document ``models.timemodel.DeviceTimeModel.
    from_dict`` rebuilds (trees, invoke overhead, cache size, reload rate, extra curve), to
    predict offline or to give ``bench.decompose --model``; 404 before its first fit."""
    return service.model_export(service.current_version_or_404(session, device_id))


@router.get("/models/{device_id}/versions")
def list_versions(device_id: int, session: SessionDep) -> list[VersionRead]:
    return service.versions_read(session, device_id)


@router.post("/models/{device_id}/fit", status_code=status.HTTP_202_ACCEPTED)
def request_fit(device_id: int, session: SessionDep, _client: ClientDep) -> FitRequested:
    """Refit the device's time model from its stored samples now, even with no new sample (e.g.
    after upgrading the farm); poll ``GET /models/{device_id}`` for the new version."""
    return service.request_refit(session, device_id)


@router.post("/models/{device_id}/predict", openapi_extra=multipart_openapi())
async def predict(device_id: int, request: Request, session: SessionDep) -> Prediction:
    """Predict an uploaded .tflite network's latency (ms), op by op, on the device's model."""
    upload = await read_tflite_upload(request)
    return await run_in_threadpool(service.predict_upload, session, device_id, upload.content)


@router.get(
    "/models/{device_id}/plots/conv2d.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def conv2d_plot(device_id: int, session: SessionDep) -> Response:
    """Measured vs predicted conv2d latency across output channels (PNG)."""
    return Response(service.conv2d_plot_png(session, device_id), media_type="image/png")
