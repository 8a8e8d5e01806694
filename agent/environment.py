"""What a measurement ran on: the execution config of a device and the environment of a sample.

The execution config (runtime, version, delegate, threads, core mask) identifies a time model; the
environment (plus governor, temperature, hashes) is stored beside every sample so that a changed
runtime binary or a throttling device can be told apart later.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Iterator
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

from agent.runner import measurement_core
from fdiot.settings import Settings

RUNTIME = "litert"
# LiteRT's default CPU path applies XNNPACK to every op it supports (DESIGN.md).
DELEGATE = "xnnpack"
# The native library that runs Interpreter.invoke(); its hash pins the exact runtime build.
_RUNTIME_LIBRARY = "_pywrap_litert_interpreter_wrapper.so"
_THERMAL_ROOT = Path("/sys/class/thermal")
_CPU_ROOT = Path("/sys/devices/system/cpu")
_CPUINFO = Path("/proc/cpuinfo")
# A random id the kernel draws at every boot (Documentation/admin-guide/sysctl/kernel.rst).
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")
# /proc/cpuinfo keys that name the silicon: x86 (vendor, family, model, stepping) and ARM (the
# implementer and part codes, which name the core, e.g. 0x41/0xd0b = Cortex-A76).
_CPUINFO_KEYS = (
    "model name",
    "cpu family",
    "model",
    "stepping",
    "CPU implementer",
    "CPU part",
    "CPU variant",
    "Hardware",
)
# Thermal zones report millidegrees Celsius (Linux sysfs ABI).
_MILLIDEGREES_PER_DEGREE = 1000.0


@lru_cache
def runtime_version() -> str:
    """The installed ``ai-edge-litert`` version, e.g. ``"2.3.0"``."""
    return metadata.version("ai-edge-litert")


@lru_cache
def runtime_binary_sha256() -> str | None:
    """sha256 of LiteRT's interpreter extension module, or None where it cannot be found."""
    import ai_edge_litert

    library = Path(ai_edge_litert.__file__).parent / _RUNTIME_LIBRARY
    if not library.exists():
        return None
    digest = hashlib.sha256()
    with library.open("rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def core_mask(cores: list[int]) -> str:
    """Cores as a hex affinity mask, as ``taskset`` writes it: ``[1] -> "0x2"``."""
    return hex(sum(1 << core for core in cores))


def execution_config(settings: Settings) -> dict[str, Any]:
    """The local CPU device's execution config: ``{runtime, runtime_version, delegate, threads,
    core_mask}`` (``core_mask`` a hex string of the pinned core)."""
    return {
        "runtime": RUNTIME,
        "runtime_version": runtime_version(),
        "delegate": DELEGATE,
        "threads": settings.threads,
        "core_mask": core_mask([measurement_core(settings)]),
        "cpu": cpu_signature(measurement_core(settings)),
    }


@lru_cache
def cpu_signature(core: int) -> str:
    """The silicon under ``core`` as one line: the processor's name and codes from /proc/cpuinfo
    and the cache sizes the kernel reports for that core, e.g. ``"AMD EPYC; cpu family: 25;
    model: 1; stepping: 1; L1d 32K L1i 32K L2 512K L3 32768K"``.

    Part of the execution config, so a device name whose host moved to other hardware (a VM
    migrated, a board swapped) registers as a new device config with its own time model instead
    of mixing two machines' samples; ``"unknown"`` where neither source is readable.
    """
    parts = [
        value if key == "model name" else f"{key}: {value}"
        for key, value in _cpuinfo_fields(core).items()
    ]
    caches = _cache_sizes(core)
    if caches:
        parts.append(caches)
    return "; ".join(parts) or "unknown"


def _cpuinfo_fields(core: int) -> dict[str, str]:
    """The identifying fields of ``core``'s block in /proc/cpuinfo (the first block if none
    names the core, as on ARM kernels that print the part once)."""
    blocks = [
        {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in lines)}
        for lines in (b.splitlines() for b in (_read_text(_CPUINFO) or "").split("\n\n"))
        if lines
    ]
    first: dict[str, str] = blocks[0] if blocks else {}
    found = next((b for b in blocks if b.get("processor") == str(core)), first)
    return {key: found[key] for key in _CPUINFO_KEYS if found.get(key)}


def _caches(core: int) -> Iterator[tuple[str, str | None, str]]:
    """``(level, type, size)`` of each cache sysfs lists for ``core``, e.g. ``("2", "Unified",
    "512K")``; entries without a level or size are skipped."""
    for index in sorted((_CPU_ROOT / f"cpu{core}" / "cache").glob("index*")):
        level, kind, size = (_read_text(index / name) for name in ("level", "type", "size"))
        if level and size:
            yield level, kind, size


def _cache_sizes(core: int) -> str:
    """``"L1d 32K L1i 32K L2 512K L3 32768K"`` from sysfs, empty where sysfs hides it."""
    suffixes = {"Data": "d", "Instruction": "i"}
    return " ".join(
        f"L{level}{suffixes.get(kind or '', '')} {size}" for level, kind, size in _caches(core)
    )


# sysfs cache sizes: "512K", "2048K", "32M" (the kernel prints K, some boards M).
_SIZE_UNITS = {"K": 1024, "M": 1024 * 1024, "G": 1024 * 1024 * 1024}


def l2_cache_bytes(core: int) -> int | None:
    """The size of ``core``'s level-2 data or unified cache in bytes from sysfs, None where
    sysfs hides it (the measurement protocol then times every op in one load)."""
    for level, kind, size in _caches(core):
        if level != "2" or kind == "Instruction":
            continue
        unit = _SIZE_UNITS.get(size[-1].upper(), 1)
        digits = size.rstrip("KkMmGgBb")
        if digits.isdigit():
            return int(digits) * unit
    return None


def boot_id() -> str | None:
    """The kernel's id of the current boot, None where /proc hides it.

    Two hosts can share a :func:`cpu_signature` and still time the same model far apart: the
    second and the sixth development VMs had the same processor and caches, and the sixth ran
    the 27 networks of ``bench.zoo`` a median 1.24x (1.14-2.14x) slower over their runs
    (a busier host; ``bench/results/network_history.json``). Nothing in /proc or sysfs tells two
    such VMs apart, but each one is a new boot, so a boot is the longest span over which
    measurements can be pooled as one host's.
    """
    return _read_text(_BOOT_ID)


def cpu_governor(core: int) -> str | None:
    """The cpufreq governor of ``core`` (e.g. ``"performance"``), None where sysfs hides it."""
    return _read_text(_CPU_ROOT / f"cpu{core}" / "cpufreq" / "scaling_governor")


def temperature_c() -> float | None:
    """The hottest thermal zone in degrees Celsius, None where no zone is readable."""
    readings: list[float] = []
    for zone in sorted(_THERMAL_ROOT.glob("thermal_zone*")):
        text = _read_text(zone / "temp")
        try:
            readings.append(float(text or "") / _MILLIDEGREES_PER_DEGREE)
        except ValueError:
            continue  # unreadable or empty zone
    return max(readings) if readings else None


def environment_info(model: bytes, settings: Settings) -> dict[str, Any]:
    """The environment of one sample measured locally on ``model`` (see docs/internals.md)."""
    core = measurement_core(settings)
    return {
        "runtime": RUNTIME,
        "runtime_version": runtime_version(),
        "delegate": DELEGATE,
        "threads": settings.threads,
        "cpu_affinity": [core],
        "governor": cpu_governor(core),
        "temperature_c": temperature_c(),
        "model_sha256": hashlib.sha256(model).hexdigest(),
        "host": socket.gethostname(),
        "runtime_sha256": runtime_binary_sha256(),
        "cpu": cpu_signature(core),
    }


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None
