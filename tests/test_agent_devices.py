"""Which device an agent serves and what measures on it (local CPU, adb phone, SSH board).

The adb/SSH runners cannot reach hardware here; these tests check the selection, the settings
validation, and that an unreachable board fails one measurement with a clear MeasurementError.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.devices import SshRunner, configured_device, device_runner
from agent.runner import MeasurementChild, MeasurementError
from fdiot.settings import Settings


def test_remote_device_needs_an_address() -> None:
    with pytest.raises(ValidationError, match="FDIOT_DEVICE_ADDRESS"):
        Settings(device_kind="ssh")


def test_local_is_the_default_device() -> None:
    settings = Settings()
    assert configured_device(settings).kind == "local"
    runner = device_runner(settings)
    try:
        assert isinstance(runner, MeasurementChild)
    finally:
        runner.close()


def test_ssh_board_selection_and_command() -> None:
    settings = Settings(
        device_kind="ssh", device_address="pi@board-1", benchmark_binary="/opt/bm/benchmark_model"
    )
    spec = configured_device(settings)
    assert (spec.kind, spec.name) == ("ssh", "pi@board-1")
    runner = device_runner(settings)
    assert isinstance(runner, SshRunner)
    assert runner.benchmark_command("/tmp/m.tflite").startswith("/opt/bm/benchmark_model ")


def test_unreachable_board_fails_the_measurement_clearly() -> None:
    # A board on loopback with no SSH server: scp is refused at once (no traffic leaves the host).
    settings = Settings(device_kind="ssh", device_address="nobody@127.0.0.1")
    runner = device_runner(settings)
    runner.submit(b"TFL3")
    with pytest.raises(MeasurementError, match="scp"):
        runner.result()
