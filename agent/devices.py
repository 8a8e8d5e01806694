"""Device discovery (local CPU, adb phones, SSH boards) and runners for remote devices.

The local CPU is measured by :mod:`agent.runner` in a pinned child process. Phones (adb) and
boards (SSH) are measured by pushing the .tflite and running LiteRT's ``benchmark_model`` binary
there, then parsing its output with :func:`parse_benchmark_output`.

NOT TESTED ON HARDWARE: the adb and SSH runners have never run against a real phone or board
(the development host has none). Their command lines follow LiteRT's ``benchmark_model``
documentation; the output parser is unit-tested on captured output of that tool.
"""

from __future__ import annotations

import dataclasses
import math
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Any

from agent.environment import DELEGATE, RUNTIME, core_mask, execution_config
from agent.runner import LatencyStats, MeasurementError
from fdiot.settings import Settings

# Version string of a remote runtime we have not probed (benchmark_model prints none).
UNKNOWN_VERSION = "unknown"
# Where benchmark_model and pushed models live on an Android device: the shell user's writable dir.
ADB_WORK_DIR = "/data/local/tmp"
SSH_WORK_DIR = "/tmp"
# z-score of the 10th/90th percentile of a normal distribution, for outputs without percentiles.
_Z_P90 = 1.2816
# Seconds a remote benchmark may run (benchmark_model's own --max_secs defaults to 150).
_REMOTE_TIMEOUT_S = 300.0
# `adb devices -l` answers within a second; a hung adb server must not stall discovery.
_ADB_LIST_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeviceSpec:
    """A device an agent can measure on: ``kind`` is ``local``, ``adb`` or ``ssh``."""

    name: str
    kind: str
    host: str
    execution_config: dict[str, Any]
    extra: dict[str, str] = field(default_factory=dict)  # e.g. adb model/product

    def to_dict(self) -> dict[str, Any]:
        """The body of ``POST /devices``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "host": self.host,
            "execution_config": self.execution_config,
        }


def local_device(settings: Settings) -> DeviceSpec:
    """This host's CPU, measured by LiteRT in a pinned child process."""
    host = socket.gethostname()
    return DeviceSpec(
        name=settings.agent_name or f"{host}-cpu",
        kind="local",
        host=host,
        execution_config=execution_config(settings),
    )


def registered(devices: list[dict[str, Any]], spec: DeviceSpec) -> dict[str, Any] | None:
    """The row of ``GET /devices`` that ``spec`` registered as: same name, kind and execution
    config (a host that moved to other silicon has a second row under its name; see
    :func:`agent.environment.cpu_signature`), None while the agent has not registered it."""
    for device in devices:
        if (device["name"], device["kind"], device["execution_config"]) == (
            spec.name,
            spec.kind,
            spec.execution_config,
        ):
            return device
    return None


def remote_execution_config(threads: int = 1, cores: list[int] | None = None) -> dict[str, Any]:
    """Execution config of a benchmark_model device (runtime version not probed)."""
    return {
        "runtime": RUNTIME,
        "runtime_version": UNKNOWN_VERSION,
        "delegate": DELEGATE,
        "threads": threads,
        "core_mask": core_mask(cores) if cores else "all",
    }


def parse_adb_devices(text: str) -> list[DeviceSpec]:
    """Parse ``adb devices -l`` output; devices not in the ``device`` state are skipped."""
    devices = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or line.startswith(("List of devices", "*")) or parts[1] != "device":
            continue
        serial = parts[0]
        extra = dict(part.split(":", 1) for part in parts[2:] if ":" in part)
        name = f"{extra.get('model', 'android')}-{serial}"
        devices.append(
            DeviceSpec(
                name=name,
                kind="adb",
                host=socket.gethostname(),
                execution_config=remote_execution_config(),
                extra={"serial": serial, **extra},
            )
        )
    return devices


def adb_devices() -> list[DeviceSpec]:
    """Phones attached over adb (``[]`` where adb is not installed or fails)."""
    adb = shutil.which("adb")
    if adb is None:
        return []
    try:
        listing = subprocess.run(
            [adb, "devices", "-l"],
            capture_output=True,
            text=True,
            timeout=_ADB_LIST_TIMEOUT_S,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_adb_devices(listing.stdout)


def ssh_devices(hosts: list[str]) -> list[DeviceSpec]:
    """Boards reachable over SSH, one per configured ``user@host`` (not probed here)."""
    return [
        DeviceSpec(
            name=host,
            kind="ssh",
            host=host,
            execution_config=remote_execution_config(),
            extra={"ssh_host": host},
        )
        for host in hosts
    ]


# ---------------------------------------------------------------------------- benchmark_model


@dataclass(frozen=True)
class BenchmarkTimings:
    """What ``benchmark_model`` reports, in microseconds; percentiles are None on old builds."""

    init_us: float
    first_inference_us: float
    warmup_avg_us: float
    inference_avg_us: float
    count: int
    std_us: float
    min_us: float
    max_us: float
    p5_us: float | None = None
    median_us: float | None = None
    p95_us: float | None = None

    def latency_stats(self, max_spread: float) -> LatencyStats:
        """As :class:`LatencyStats` (ms). p10/p90 are approximated by benchmark_model's p5/p95
        (a wider, conservative spread); without percentiles, by a normal fit of avg and std."""
        if self.median_us is not None and self.p5_us is not None and self.p95_us is not None:
            median, low, high = self.median_us, self.p5_us, self.p95_us
        else:
            median = self.inference_avg_us
            low = max(self.min_us, median - _Z_P90 * self.std_us)
            high = min(self.max_us, median + _Z_P90 * self.std_us)
        spread = (high - low) / median if median > 0 else math.inf
        return LatencyStats(
            median_ms=median / 1000,
            p10_ms=low / 1000,
            p90_ms=high / 1000,
            std_ms=self.std_us / 1000,
            runs=self.count,
            spread_ok=spread <= max_spread,
            stable=spread <= max_spread,  # no run order in benchmark_model's output: no drift
        )


_NUMBER = r"([-+0-9.eE]+)"
_SUMMARY_RE = re.compile(
    rf"Inference timings in us: Init: {_NUMBER}, First inference: {_NUMBER}, "
    rf"Warmup \(avg\): {_NUMBER}, Inference \(avg\): {_NUMBER}"
)
_COUNT_RE = re.compile(r"count=(\d+)((?: \w+=[-+0-9.eE]+)*)")


def parse_benchmark_output(text: str) -> BenchmarkTimings:
    """Parse ``benchmark_model`` stdout/stderr; ValueError when the summary line is missing.

    The stats line of the timed runs is the last ``count=...`` line before the summary (the
    first one, if any, is the warm-up's).
    """
    summary = _SUMMARY_RE.search(text)
    if summary is None:
        raise ValueError("benchmark_model output has no 'Inference timings in us' line")
    stats: dict[str, str] = {}
    count = 0
    for match in _COUNT_RE.finditer(text[: summary.start()]):
        count = int(match.group(1))
        stats = dict(pair.split("=", 1) for pair in match.group(2).split())
    init_us, first_us, warmup_us, inference_us = (float(v) for v in summary.groups())

    def stat(name: str, default: float | None = None) -> float | None:
        return float(stats[name]) if name in stats else default

    return BenchmarkTimings(
        init_us=init_us,
        first_inference_us=first_us,
        warmup_avg_us=warmup_us,
        inference_avg_us=inference_us,
        count=count,
        std_us=stat("std", 0.0) or 0.0,
        min_us=stat("min", inference_us) or inference_us,
        max_us=stat("max", inference_us) or inference_us,
        p5_us=stat("p5"),
        median_us=stat("median"),
        p95_us=stat("p95"),
    )


class BenchmarkModelRunner:
    """Measures a model with ``benchmark_model`` on a remote device (adb or SSH).

    UNTESTED ON HARDWARE (see module docstring). Subclasses say how to push a file and run a
    shell command there.
    """

    work_dir = SSH_WORK_DIR

    def __init__(
        self, settings: Settings, *, binary: str | None = None, cores: list[int] | None = None
    ) -> None:
        self.settings = settings
        self.binary = binary or f"{self.work_dir}/benchmark_model"
        self.cores = cores
        self._submitted = b""

    def submit(self, model: bytes, weight_bytes: float = 0.0) -> None:
        """Queue ``model`` for :meth:`result` (the same two-step API as ``MeasurementChild``).

        ``weight_bytes`` is accepted and not used: every attempt here is a ``benchmark_model``
        process of its own, so a model is loaded anew at each attempt anyway.
        """
        self._submitted = model

    def result(self) -> LatencyStats:
        return self.measure(self._submitted)

    def close(self) -> None:
        """Nothing stays open between measurements (each is one adb/ssh command)."""

    def measure_network(self, model: bytes) -> LatencyStats:
        """A whole network: the same protocol (no canary runs on the device)."""
        return self.measure(model)

    def measure(self, model: bytes) -> LatencyStats:
        """Push ``model``, run the protocol (re-measuring wide spreads), return the best attempt."""
        remote = f"{self.work_dir}/fdiot_{sha256(model).hexdigest()[:16]}.tflite"
        with tempfile.TemporaryDirectory() as folder:
            local = Path(folder) / "model.tflite"
            local.write_bytes(model)
            self._push(local, remote)
        attempts = [self._run_once(remote)]
        while not attempts[-1].spread_ok and len(attempts) <= self.settings.max_remeasure:
            attempts.append(self._run_once(remote))
        self._shell(f"rm -f {shlex.quote(remote)}")
        best = min(attempts, key=lambda stats: stats.spread)
        return dataclasses.replace(best, attempts=len(attempts))

    def benchmark_command(self, remote_model: str) -> str:
        """The shell command run on the device (pinned with ``taskset`` when cores are given)."""
        args = [
            self.binary,
            f"--graph={remote_model}",
            f"--num_threads={self.settings.threads}",
            f"--warmup_runs={self.settings.warmup_runs}",
            f"--num_runs={self.settings.min_runs}",
            f"--min_secs={self.settings.min_time_s}",
            "--use_xnnpack=true",
        ]
        command = " ".join(shlex.quote(arg) for arg in args)
        if self.cores:
            command = f"taskset {core_mask(self.cores)[2:]} {command}"
        return command

    def _run_once(self, remote_model: str) -> LatencyStats:
        output = self._shell(self.benchmark_command(remote_model))
        try:
            return parse_benchmark_output(output).latency_stats(self.settings.max_spread)
        except ValueError as error:
            raise MeasurementError(
                f"benchmark_model failed: {error}", stderr_tail=output[-2000:]
            ) from None

    def _run(self, command: list[str]) -> str:
        try:
            done = subprocess.run(
                command, capture_output=True, text=True, timeout=_REMOTE_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise MeasurementError(
                f"{command[0]} timed out after {_REMOTE_TIMEOUT_S:g} s"
            ) from None
        if done.returncode != 0:
            raise MeasurementError(
                f"{shlex.join(command[:3])}... exited {done.returncode}",
                stderr_tail=(done.stdout + done.stderr)[-2000:],
            )
        return done.stdout + done.stderr

    def _push(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    def _shell(self, command: str) -> str:
        raise NotImplementedError


class AdbRunner(BenchmarkModelRunner):
    """benchmark_model on an Android phone over ``adb -s SERIAL`` (untested on hardware)."""

    work_dir = ADB_WORK_DIR

    def __init__(self, serial: str, settings: Settings, **options: Any) -> None:
        super().__init__(settings, **options)
        self.serial = serial

    def _push(self, local: Path, remote: str) -> None:
        self._run(["adb", "-s", self.serial, "push", str(local), remote])

    def _shell(self, command: str) -> str:
        return self._run(["adb", "-s", self.serial, "shell", command])


class SshRunner(BenchmarkModelRunner):
    """benchmark_model on a Linux board over ``ssh``/``scp`` (untested on hardware)."""

    def __init__(self, host: str, settings: Settings, **options: Any) -> None:
        super().__init__(settings, **options)
        self.host = host

    def _push(self, local: Path, remote: str) -> None:
        self._run(["scp", "-q", "-o", "BatchMode=yes", str(local), f"{self.host}:{remote}"])

    def _shell(self, command: str) -> str:
        return self._run(["ssh", "-o", "BatchMode=yes", self.host, command])


def configured_device(settings: Settings) -> DeviceSpec:
    """The device this agent serves, from ``FDIOT_DEVICE_KIND`` / ``FDIOT_DEVICE_ADDRESS``."""
    if settings.device_kind == "local":
        return local_device(settings)
    address = str(settings.device_address)
    if settings.device_kind == "adb":
        for spec in adb_devices():
            if spec.extra.get("serial") == address:
                return spec
        raise MeasurementError(f"no phone with serial {address!r} in `adb devices -l`")
    return ssh_devices([address])[0]


def device_runner(settings: Settings) -> Any:
    """What measures on the configured device: a pinned LiteRT child process for ``local``, a
    ``benchmark_model`` runner for ``adb``/``ssh``; all offer ``submit``/``result``/``measure``."""
    options: dict[str, Any] = {}
    if settings.benchmark_binary:
        options["binary"] = settings.benchmark_binary
    if settings.device_kind == "adb":
        return AdbRunner(str(settings.device_address), settings, **options)
    if settings.device_kind == "ssh":
        return SshRunner(str(settings.device_address), settings, **options)
    from agent.runner import MeasurementChild

    return MeasurementChild(settings)
