"""HTTP client of the farm's REST API (docs/internals.md), used by the CLI, the agent and bench/.

One method per endpoint; every answer is the server's JSON as a plain ``dict``/``list``. An error
answer (4xx/5xx) raises :class:`FarmError` carrying the server's own message. Connection errors
are retried with exponential backoff for ``retry_for_s`` seconds: the agent passes a long window
so that a server restart never loses a measured sample; the CLI passes a short one so that a
server that is not running is reported quickly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from fdiot.settings import Settings, get_settings

T = TypeVar("T")

log = logging.getLogger(__name__)

JSON = dict[str, Any]

# Connect fast (the server is on the LAN or loopback); reads may wait for an upload's parse.
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# Backoff between retries: starts small so a restarting server is found quickly, capped so the
# agent keeps probing every few seconds while the server is down.
_BACKOFF_FIRST_S = 0.2
_BACKOFF_MAX_S = 5.0
# Gateway-style answers mean "server not there right now", the same as a refused connection.
_RETRYABLE_STATUS = {502, 503, 504}

TERMINAL_JOB_STATUSES = frozenset({"done", "failed"})
TERMINAL_CAMPAIGN_STATUSES = frozenset({"done", "failed", "cancelled"})


class FarmError(Exception):
    """An error answer from the server (``status_code`` >= 400); 0 when it could not be reached."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(f"{status_code}: {detail}" if status_code else detail)
        self.status_code = status_code
        self.detail = detail


def _detail(response: httpx.Response) -> str:
    """The server's message: FastAPI's ``detail`` (string or validation list) or the raw body."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip() or response.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, list):  # pydantic validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", []))
                    parts.append(f"{where}: {item.get('msg', item)}")
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return str(detail)
    return str(body)


class FarmClient:
    """Client of one farm server.

    Parameters
    ----------
    base_url, token:
        Default to ``settings.url`` / ``settings.token`` (``FDIOT_URL`` / ``FDIOT_TOKEN``); in local
        mode the admin token from ``FDIOT_HOME/admin_token`` is used when no token is set.
    retry_for_s:
        How long (seconds) to keep retrying a request that could not reach the server.
    retry_server_errors:
        Also retry 500 answers (the agent sets this: a server whose database is restarting answers
        500, and a measured sample must not be dropped for it).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        *,
        settings: Settings | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        retry_for_s: float = 10.0,
        retry_server_errors: bool = False,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        settings = settings or get_settings()
        self.base_url = (base_url or settings.url).rstrip("/")
        self.token = token or settings.token or settings.admin_token
        self.retry_for_s = retry_for_s
        self.retry_server_errors = retry_server_errors
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self._http = httpx.Client(
            base_url=self.base_url, headers=headers, timeout=timeout, transport=transport
        )

    # -- plumbing ---------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        files: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        idempotent: bool = True,
    ) -> httpx.Response:
        """Send one request, retrying while the server cannot be reached; raise on 4xx/5xx.

        A request that is not ``idempotent`` is retried only when it surely never reached the
        server (connection refused / connect timeout), never after it may have been processed.
        """
        deadline = time.monotonic() + self.retry_for_s
        delay_s = _BACKOFF_FIRST_S
        while True:
            retry_reason: str | None = None
            try:
                response = self._http.request(
                    method, path, json=json, files=files, data=data, params=params
                )
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                retry_reason = f"cannot reach the farm server at {self.base_url} ({exc})"
            except httpx.TransportError as exc:
                if not idempotent:
                    raise FarmError(0, f"request to {self.base_url}{path} failed: {exc}") from exc
                retry_reason = f"request to {self.base_url}{path} failed: {exc}"
            else:
                status = response.status_code
                retryable = status in _RETRYABLE_STATUS or (
                    self.retry_server_errors and status == 500 and idempotent
                )
                if not retryable:
                    if status >= 400:
                        raise FarmError(status, _detail(response))
                    return response
                retry_reason = f"server answered {status}: {_detail(response)}"
            if time.monotonic() + delay_s > deadline:
                raise FarmError(0, retry_reason)
            log.warning("%s; retrying in %.1f s", retry_reason, delay_s)
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, _BACKOFF_MAX_S)

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.request(method, path, **kwargs)
        if not response.content:
            return None
        return response.json()

    # -- public routes ----------------------------------------------------------------------
    def health(self) -> JSON:
        """``GET /healthz``: ``{status, database, redis}``."""
        result: JSON = self._json("GET", "/healthz")
        return result

    def create_token(self, kind: str, name: str) -> JSON:
        """``POST /tokens`` (admin): ``{id, kind, name, token}``; the token is shown once."""
        result: JSON = self._json(
            "POST", "/tokens", json={"kind": kind, "name": name}, idempotent=False
        )
        return result

    def devices(self) -> list[JSON]:
        result: list[JSON] = self._json("GET", "/devices")
        return result

    def device(self, device_id: int) -> JSON:
        result: JSON = self._json("GET", f"/devices/{device_id}")
        return result

    def register_device(
        self, name: str, kind: str, host: str, execution_config: Mapping[str, Any]
    ) -> JSON:
        """``POST /devices``: idempotent on (name, execution_config); returns the device."""
        body = {
            "name": name,
            "kind": kind,
            "host": host,
            "execution_config": dict(execution_config),
        }
        result: JSON = self._json("POST", "/devices", json=body)
        return result

    def create_campaign(
        self,
        device_id: int,
        *,
        op_types: list[str] | None = None,
        samples: int | None = None,
        seed: int | None = None,
        max_device_minutes: float | None = None,
        fresh: bool = False,
    ) -> JSON:
        """``POST /devices/{id}/campaigns`` -> the campaign (202)."""
        body: JSON = {"fresh": True} if fresh else {}
        if max_device_minutes is not None:
            body["max_device_minutes"] = max_device_minutes
        if op_types:
            body["op_types"] = op_types
        if samples is not None:
            body["samples"] = samples
        if seed is not None:
            body["seed"] = seed
        result: JSON = self._json(
            "POST", f"/devices/{device_id}/campaigns", json=body, idempotent=False
        )
        return result

    def campaign(self, campaign_id: int) -> JSON:
        result: JSON = self._json("GET", f"/campaigns/{campaign_id}")
        return result

    def upload_benchmark(
        self, device_id: int, model: Path | bytes, name: str | None = None
    ) -> JSON:
        """``POST /devices/{id}/benchmarks`` with a .tflite file -> the network job (202)."""
        filename, content = _file_part(model, name)
        data = {"name": name or filename}
        result: JSON = self._json(
            "POST",
            f"/devices/{device_id}/benchmarks",
            files={"file": (filename, content, "application/octet-stream")},
            data=data,
            idempotent=False,
        )
        return result

    def job(self, job_id: int) -> JSON:
        result: JSON = self._json("GET", f"/jobs/{job_id}")
        return result

    def wait_job(
        self,
        job_id: int,
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        callback: Callable[[JSON], None] | None = None,
    ) -> JSON:
        """Poll ``GET /jobs/{id}`` until it is done or failed; return the last answer.

        Raises ``TimeoutError`` after ``timeout_s`` seconds (``None``: wait forever).
        """
        return _poll(
            lambda: self.job(job_id),
            lambda job: job["status"] in TERMINAL_JOB_STATUSES,
            lambda job: f"job {job_id} still {job['status']}",
            timeout_s=timeout_s,
            poll_s=poll_s,
            callback=callback,
        )

    def wait_campaign(
        self,
        campaign_id: int,
        *,
        callback: Callable[[JSON], None] | None = None,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
    ) -> JSON:
        """Poll ``GET /campaigns/{id}`` until it finishes, calling ``callback`` with each answer."""
        return _poll(
            lambda: self.campaign(campaign_id),
            lambda campaign: campaign["status"] in TERMINAL_CAMPAIGN_STATUSES,
            lambda campaign: f"campaign {campaign_id} still {campaign['status']}",
            timeout_s=timeout_s,
            poll_s=poll_s,
            callback=callback,
        )

    def current_model(self, device_id: int) -> JSON:
        """``GET /models/{device_id}``: the current model version (404 before the first fit)."""
        result: JSON = self._json("GET", f"/models/{device_id}")
        return result

    def export_model(self, device_id: int) -> JSON:
        """``GET /models/{device_id}/export``: the current version's whole model document."""
        result: JSON = self._json("GET", f"/models/{device_id}/export")
        return result

    def refit(self, device_id: int) -> JSON:
        """``POST /models/{device_id}/fit``: refit from the stored samples (202)."""
        result: JSON = self._json("POST", f"/models/{device_id}/fit")
        return result

    def wait_model(
        self,
        device_id: int,
        *,
        newer_than: int | None = None,
        min_samples: int = 0,
        timeout_s: float | None = None,
        poll_s: float = 2.0,
    ) -> JSON:
        """Poll ``GET /models/{device_id}`` until a version newer than ``newer_than`` fitted on at
        least ``min_samples`` samples exists (a 404, no version yet, counts as not yet)."""

        def fetch() -> JSON | None:
            try:
                return self.current_model(device_id)
            except FarmError as error:
                if error.status_code != 404:
                    raise
                return None

        def done(model: JSON | None) -> bool:
            return (
                model is not None
                and (newer_than is None or int(model["version"]) > newer_than)
                and int(model.get("sample_count") or 0) >= min_samples
            )

        model = _poll(
            fetch,
            done,
            lambda _: (
                f"no model version of device {device_id} after v{newer_than} "
                f"on {min_samples}+ samples"
            ),
            timeout_s=timeout_s,
            poll_s=poll_s,
        )
        assert model is not None
        return model

    def model_versions(self, device_id: int) -> list[JSON]:
        result: list[JSON] = self._json("GET", f"/models/{device_id}/versions")
        return result

    def predict(self, device_id: int, model: Path | bytes, name: str | None = None) -> JSON:
        """``POST /models/{device_id}/predict`` with a .tflite file -> per-op predicted times."""
        filename, content = _file_part(model, name)
        result: JSON = self._json(
            "POST",
            f"/models/{device_id}/predict",
            files={"file": (filename, content, "application/octet-stream")},
        )
        return result

    def plot(self, device_id: int) -> bytes:
        """``GET /models/{device_id}/plots/conv2d.png``: PNG bytes."""
        return self.request("GET", f"/models/{device_id}/plots/conv2d.png").content

    # -- agent routes (agent token) -----------------------------------------------------------
    def agent_job(self, job_id: int) -> JSON:
        """``GET /agent/jobs/{id}``: ``{id, kind, device_id, status, configs, done_indices}``."""
        result: JSON = self._json("GET", f"/agent/jobs/{job_id}")
        return result

    def agent_job_model(self, job_id: int) -> bytes:
        """``GET /agent/jobs/{id}/model``: the uploaded .tflite bytes of a network job."""
        return self.request("GET", f"/agent/jobs/{job_id}/model").content

    def start_job(self, job_id: int) -> JSON | None:
        result: JSON | None = self._json("POST", f"/agent/jobs/{job_id}/start")
        return result

    def post_samples(self, job_id: int, samples: list[JSON]) -> JSON | None:
        """``POST /agent/jobs/{id}/samples``; idempotent on (job_id, index), so always retried."""
        result: JSON | None = self._json(
            "POST", f"/agent/jobs/{job_id}/samples", json={"samples": samples}
        )
        return result

    def complete_job(self, job_id: int, result: JSON | None = None) -> JSON | None:
        body: JSON = {} if result is None else {"result": result}
        answer: JSON | None = self._json("POST", f"/agent/jobs/{job_id}/complete", json=body)
        return answer

    def fail_job(self, job_id: int, error: str) -> JSON | None:
        answer: JSON | None = self._json(
            "POST", f"/agent/jobs/{job_id}/fail", json={"error": error}
        )
        return answer


def _file_part(model: Path | bytes, name: str | None) -> tuple[str, bytes]:
    if isinstance(model, bytes):
        return (name or "model.tflite"), model
    path = Path(model)
    return path.name, path.read_bytes()


def _poll(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    describe: Callable[[T], str],
    *,
    timeout_s: float | None,
    poll_s: float,
    callback: Callable[[T], None] | None = None,
) -> T:
    """Call ``fetch`` every ``poll_s`` s until ``done`` says so; return that answer. Raises
    ``TimeoutError`` (``describe`` of the last answer) after ``timeout_s`` (``None``: forever)."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        answer = fetch()
        if callback is not None:
            callback(answer)
        if done(answer):
            return answer
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"{describe(answer)} after {timeout_s} s")
        time.sleep(poll_s)
