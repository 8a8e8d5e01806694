"""The ``fdiot`` command line without a running farm: help, argument validation, and a clear
error (never a traceback) when the server cannot be reached.

The commands that talk to a running farm are exercised in tests/test_agent_daemon.py.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fdiot.cli import app, disturbed_warning
from fdiot.client import FarmClient, FarmError
from fdiot.settings import get_settings

runner = CliRunner()


@pytest.fixture
def dead_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """A loopback URL where nothing listens, set as FDIOT_URL with a fresh, empty FDIOT_HOME."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"  # the port is free again once the socket closes
    monkeypatch.setenv("FDIOT_URL", url)
    monkeypatch.setenv("FDIOT_HOME", str(tmp_path))
    monkeypatch.delenv("FDIOT_TOKEN", raising=False)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()


def test_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = ("up", "down", "agent", "devices", "profile", "bench", "predict", "models", "fit")
    for command in commands:
        assert command in result.output
    assert runner.invoke(app, ["token", "--help"]).exit_code == 0


@pytest.mark.parametrize(
    "args",
    [
        ["profile"],  # --device is required
        ["profile", "--device", "not-a-number"],
        ["profile", "--device", "1", "--samples", "0"],
        ["bench", "--device", "1"],  # MODEL is required
        ["predict", "model.tflite"],  # --device is required
        ["models"],
        ["token", "create", "--kind", "agent"],  # --name is required
    ],
)
def test_bad_arguments_exit_with_usage_error(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_token_kind_is_checked(dead_url: str) -> None:
    result = runner.invoke(app, ["token", "create", "--kind", "admin", "--name", "x"])
    assert result.exit_code == 2
    assert "agent or client" in result.output


def test_missing_model_file_is_reported(dead_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.tflite"
    for command in ("bench", "predict"):
        result = runner.invoke(app, [command, "--device", "1", str(missing)])
        assert result.exit_code == 2
        assert "not a file" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["devices"],
        ["devices", "--json"],
        ["profile", "--device", "1", "--samples", "10"],
        ["models", "--device", "1", "--json"],
        ["models", "--device", "1", "--export", "model.json"],
        ["token", "create", "--kind", "client", "--name", "someone"],
    ],
)
def test_unreachable_server_gives_a_clear_error(dead_url: str, args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 1
    assert "cannot reach the farm server" in result.output
    assert dead_url in result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)


def test_bench_uploads_nothing_when_server_is_down(dead_url: str, tmp_path: Path) -> None:
    model = tmp_path / "tiny.tflite"
    model.write_bytes(b"TFL3 not really a model")
    result = runner.invoke(app, ["bench", "--device", "1", "--json", str(model)])
    assert result.exit_code == 1
    assert "cannot reach the farm server" in result.output


def test_client_raises_farm_error_with_status_zero(dead_url: str) -> None:
    with (
        FarmClient(base_url=dead_url, token="t", retry_for_s=0.0) as client,
        pytest.raises(FarmError) as caught,
    ):
        client.devices()
    assert caught.value.status_code == 0
    assert dead_url in caught.value.detail


def test_a_noisy_campaign_is_called_out() -> None:
    quiet = {"samples_done": 2500, "samples_disturbed": 16}
    assert disturbed_warning(quiet) is None
    assert disturbed_warning({"samples_done": 0, "samples_disturbed": 0}) is None
    noisy = {"samples_done": 2500, "samples_disturbed": 688}
    warning = disturbed_warning(noisy)
    assert warning is not None and "688 of 2500 samples (28%)" in warning


def test_campaign_lines_show_device_minutes_against_the_budget() -> None:
    from fdiot.cli import _device_minutes

    assert _device_minutes({"device_minutes": 12.34, "max_device_minutes": 30.0}) == (
        "12.3 of 30 device min"
    )
    assert _device_minutes({"device_minutes": 41.0, "max_device_minutes": None}) == (
        "41.0 device min"
    )
    assert _device_minutes({}) == "0.0 device min"  # an older server: no budget fields


def test_a_campaign_cut_by_its_budget_says_what_was_left() -> None:
    from fdiot.cli import budget_note

    note = budget_note(
        {
            "jobs_skipped": 47,
            "max_device_minutes": 1.0,
            "samples_done": 179,
            "samples_requested": 2555,
        }
    )
    assert "47 job(s) skipped" in note and "1-minute" in note
    assert "after 179 of 2555 samples" in note and "--minutes" in note


def test_a_second_farm_on_a_taken_port_stops_before_starting_its_server(tmp_path: Path) -> None:
    """The demo once reached another farm's server on port 8000 (its health check answered) and
    got 401s from it; the port is now checked before the server starts."""
    from fdiot.processes import FarmProcesses, check_port_free
    from fdiot.settings import Settings

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = Settings(home=tmp_path, host="127.0.0.1", port=port)
        processes = FarmProcesses(settings=settings, env={})
        with pytest.raises(RuntimeError, match=f"127.0.0.1:{port} is in use"):
            processes.start("server")
        assert processes.procs == {}  # nothing was started
    check_port_free("127.0.0.1", port)  # free again once its listener closed


def test_trust_line_gives_the_band_the_uncovered_time_and_the_validation() -> None:
    from fdiot.cli import trust_line

    answer = {
        "expected_error_pct": 5.25,
        "unvalidated_ms": 0.2,
        "validation_mape_pct": 3.14,
        "validation_networks": 27,
    }
    line = trust_line(answer)
    assert line == (
        "expected error ±5.2% (the op types' CV MAPE, weighted by their time); 0.200 ms from op "
        "types without one; network validation MAPE 3.1% over 27 benchmark networks"
    )
    calibrated = trust_line({**answer, "validation_within_band_pct": 77.78})
    assert calibrated.endswith("27 benchmark networks, 78% of them within their band")
    bare = trust_line({"expected_error_pct": None, "unvalidated_ms": 0.0})
    assert bare == "expected error: no op type with a cross-validated error"
