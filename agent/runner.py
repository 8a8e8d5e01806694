"""Measure .tflite models on the local CPU with LiteRT, in a pinned child process.

The protocol (DESIGN.md, "Measurement protocol"): ``warmup_runs`` untimed invokes, then timed
invokes until both ``min_runs`` and ``min_time_s`` are reached; the label is the median, with
p10/p90/std beside it. An attempt is measured again when its **drift**, how far the medians of
the first and second half of its timed runs (in run order) differ relative to the median, exceeds
``max_drift``: the host changed state during it. That is repeated up to ``max_remeasure`` more
times, and the sample is flagged ``stable=False`` if no attempt was stable. The spread
``(p90 - p10) / median`` is stored as ``spread_ok`` against ``max_spread``; it decided
re-measurement until 2026-11-30, and still does with ``max_drift`` 0 and on adb/ssh devices (whose
tool reports no run order): on the second development VM it rejected attempts whose labels were
nearly as good as the accepted ones (``bench/attempt_criteria.py``). A sample may ask for
several good (quiet and stable) attempts, ``min_good_attempts``: network benchmark jobs take 3
and keep the median one, so that one attempt timed during a short slow spell of the host is not
the label.

Each timed attempt is preceded by a **canary**: a fixed small conv timed for ``canary_runs``
invokes in the same child. Its median over the host's current speed state (the median of the
latest ``speed_state_canaries`` canary medians; before there are that many, a quantile, the 25%
:data:`models.timemodel.CANARY_REFERENCE_QUANTILE`, of all the runner has seen) is the attempt's
``canary_ratio``, stored with the sample with its ``canary_ms``; above ``max_canary_ratio`` the
host was slowed from outside (on this 2-core VM: a fit running on the other core, other tenants).
A host that changes speed as a whole for minutes (a lower clock) is a new state, not a
disturbance: the fitter carries such labels to the reference speed by their state's canary level
(:func:`models.timemodel.quiet_samples`); a short slow spell is not divided out, since samples
timed in one had slowed far less than their canary (``bench/canary.py``). The child also reports
its CPU time over the timed runs: a ``cpu_share`` below ``min_cpu_share`` of the wall time means
another process ran on the measurement core (the canary's 10 ms can fall between two of its time
slices). Either way the attempt is *disturbed*: it is measured again, op samples at once (the
child's wait for a quiet canary is their pause), networks after ``network_disturbed_pause_s``
doubled at each attempt, and the kept attempt is the quietest. A sample still disturbed after every
attempt is stored with ``quiet=False`` in its environment, and the fitter leaves it out.

Each measurement runs in :class:`MeasurementChild`, a long-lived ``python -m agent._measure_child``
process pinned to one core (``settings.core``, default the host's last core) with its address
space capped at ``settings.child_memory_bytes``. A model that crashes or hangs the runtime raises
:class:`MeasurementError` for that model; the next measurement starts a fresh child.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np

from agent._measure_child import _FRAME_HEADER
from fdiot.settings import Settings, get_settings
from models.timemodel import canary_reference_ms

# How much of the child's stderr a MeasurementError carries.
_STDERR_TAIL_BYTES = 2000
# The child imports numpy and LiteRT before it reports ready; seconds on a loaded 2-core host.
_CHILD_START_TIMEOUT_S = 60.0
# Grace period for a child to exit after its stdin closes, before it is killed.
_CHILD_EXIT_GRACE_S = 5.0


class MeasurementError(RuntimeError):
    """One model could not be measured: ``reason`` says why (runtime error, signal, timeout).

    ``crashed`` is True when the child process died or was killed (it is restarted on next use).
    """

    def __init__(self, reason: str, *, crashed: bool = False, stderr_tail: str = "") -> None:
        message = reason if not stderr_tail else f"{reason}; stderr tail:\n{stderr_tail}"
        super().__init__(message)
        self.reason = reason
        self.crashed = crashed
        self.stderr_tail = stderr_tail


@dataclass(frozen=True)
class LatencyStats:
    """Latency of one model over ``runs`` timed invokes, in milliseconds.

    ``spread_ok`` says whether the kept attempt's ``(p90 - p10) / median`` is within the
    settings' ``max_spread``; ``drift`` is how far the medians of the first and second half of its
    timed runs differ (relative; None where only summary statistics exist, adb/ssh devices);
    ``stable`` whether the attempt passed the check that decides re-measurement: the drift limit
    ``max_drift`` for local measurements, the spread limit elsewhere. ``attempts`` counts the
    timed attempts behind it.
    """

    median_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    runs: int
    spread_ok: bool
    attempts: int = 1  # timed attempts made: 1 + re-measurements
    drift: float | None = None
    stable: bool = True
    # Canary median / the speed state's (state_canary_ms): 1.0 on a quiet host; None without one.
    canary_ratio: float | None = None
    # This process's CPU time / wall time over the timed runs (below 1: the core was shared).
    cpu_share: float | None = None
    # canary_ratio within the settings' max_canary_ratio and cpu_share at least min_cpu_share.
    quiet: bool = True
    # Canary timings of the kept attempt before its timed runs (1: quiet at once; more: the child
    # waited for a quiet window, settings.canary_wait_s); None without a canary.
    canary_polls: int | None = None
    # The slower canary median of the attempt (ms), before or after its timed runs: stored so the
    # fitter can judge it against the device's quietest canary over all samples, not only the
    # quietest this runner had seen when it timed the sample (``quiet_samples``).
    canary_ms: float | None = None
    # The canary (ms) the attempt was judged against: the host's speed state then
    # (MeasurementChild.state_reference_ms). A network's prediction is scaled by it over the
    # model's reference_canary_ms to the speed it was timed at (bench/accuracy.py).
    state_canary_ms: float | None = None
    # Wall time (s) of the whole measurement: every attempt with its canary wait and any pause
    # between attempts; what the sample cost the device, beside the kept attempt's timed runs.
    measure_s: float | None = None
    # Loads of the model the sample was timed in (settings.near_cache_loads) and each load's
    # kept median (ms), the fastest load kept; None with one load.
    loads: int = 1
    load_medians_ms: list[float] | None = None

    @property
    def spread(self) -> float:
        """``(p90 - p10) / median``: the relative spread the protocol rejects above a limit."""
        return (self.p90_ms - self.p10_ms) / self.median_ms if self.median_ms > 0 else float("inf")

    def quality(self) -> dict[str, Any]:
        """How trustworthy the measurement is, stored in the sample's ``environment``."""
        return {
            "spread_ok": self.spread_ok,
            "drift": self.drift,
            "stable": self.stable,
            "quiet": self.quiet,
            "canary_ratio": self.canary_ratio,
            "cpu_share": self.cpu_share,
            "attempts": self.attempts,
            "canary_polls": self.canary_polls,
            "canary_ms": self.canary_ms,
            "state_canary_ms": self.state_canary_ms,
            "measure_s": self.measure_s,
            "loads": self.loads,
            "load_medians_ms": self.load_medians_ms,
        }

    def to_dict(self) -> dict[str, float | int]:
        """The sample's ``latency`` object as docs/internals.md fixes it (``spread_ok`` aside)."""
        return {
            "median_ms": self.median_ms,
            "p10_ms": self.p10_ms,
            "p90_ms": self.p90_ms,
            "std_ms": self.std_ms,
            "runs": self.runs,
        }


def median_drift(times_ms: np.ndarray) -> float:
    """``|median(first half) - median(second half)| / median`` of timed runs in run order: how far
    the host moved during the attempt (0 for runs whose jitter is the same throughout)."""
    half = times_ms.size // 2
    median = float(np.median(times_ms)) if times_ms.size else 0.0
    if half < 1 or median <= 0:
        return 0.0 if median > 0 else float("inf")
    first, second = float(np.median(times_ms[:half])), float(np.median(times_ms[half:]))
    return abs(first - second) / median


def latency_stats(
    times_ns: Iterable[int], max_spread: float, max_drift: float | None = None
) -> LatencyStats:
    """Summarize per-invoke wall times (ns, in run order) as :class:`LatencyStats` (ms).

    ``stable`` is ``drift <= max_drift`` when a drift limit is given, else ``spread_ok``.
    """
    times_ms = np.asarray(list(times_ns), dtype=np.float64) / 1e6
    if times_ms.size == 0:
        raise ValueError("no timed runs")
    p10, median, p90 = (float(v) for v in np.percentile(times_ms, [10, 50, 90]))
    std = float(times_ms.std(ddof=1)) if times_ms.size > 1 else 0.0
    spread = (p90 - p10) / median if median > 0 else float("inf")
    drift = median_drift(times_ms)
    spread_ok = spread <= max_spread
    stable = spread_ok if max_drift is None else drift <= max_drift
    return LatencyStats(
        median, p10, p90, std, int(times_ms.size), spread_ok, drift=drift, stable=stable
    )


# The canary: a 3x3 conv on 28x28x32 -> 32 channels (0.49 ms on this host's CPU with XNNPACK),
# compute-bound like the ops it guards, and short enough that 20 runs add ~12 ms per attempt.
CANARY_OP: tuple[str, dict[str, Any]] = (
    "conv2d",
    {
        "h": 28,
        "w": 28,
        "cin": 32,
        "cout": 32,
        "kh": 3,
        "kw": 3,
        "stride": 1,
        "padding": "same",
        "activation": "none",
    },
)
# Canary measurements taken when the child starts, to set the quiet-host reference.
_CANARY_CALIBRATION_ROUNDS = 3
# How many of the latest canary medians the quiet-host reference is taken over (each attempt adds
# two; models.timemodel.canary_reference_ms, the quantile and why): about one default campaign
# (~3300 samples at 1.5 attempts each), so that a phase of a few minutes at another speed stays
# under the quantile's quarter. It was 1000 (about 3.5 minutes) until 2026-12-01 04:05, when such
# a phase filled it.
CANARY_HISTORY = 10000


def measurement_core(settings: Settings) -> int:
    """The core measurements are pinned to: ``settings.core``, else the last core we may use."""
    if settings.core is not None:
        return settings.core
    return max(os.sched_getaffinity(0))


class MeasurementChild:
    """A long-lived measuring process; use as a context manager or call :meth:`close`.

    :meth:`measure` is ``submit`` + ``result``; the split lets a caller build the next model
    while this one is measured (see :func:`measure_configs`).
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.core = measurement_core(self.settings)
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._pending_model: bytes | None = None
        self._pending_loads = 1
        self._submitted_at = 0.0
        from agent.environment import l2_cache_bytes  # agent.environment imports this module

        self.l2_bytes = l2_cache_bytes(self.core)
        self._pending_error: MeasurementError | None = None
        self._stderr_mark = 0
        # The canary medians (ms) seen by this runner, latest last; kept across child restarts.
        self.canaries_ms: collections.deque[float] = collections.deque(maxlen=CANARY_HISTORY)
        # The latest few, for the speed state the host is in now (settings.speed_state_canaries).
        self.recent_canaries_ms: collections.deque[float] = collections.deque(
            maxlen=max(self.settings.speed_state_canaries, 0)
        )

    @property
    def canary_reference_ms(self) -> float | None:
        """The quiet-host canary (ms) of those seen (:func:`models.timemodel.canary_reference_ms`,
        as the fitter's floor)."""
        return canary_reference_ms(self.canaries_ms)

    @property
    def state_reference_ms(self) -> float | None:
        """The canary (ms) an attempt is judged and waited against: the median of the latest
        ``speed_state_canaries`` when there are that many (the speed state the host is in now),
        else :attr:`canary_reference_ms`. A state lasting half the window becomes the reference,
        a shorter spike does not (see ``speed_state_canaries`` in fdiot/settings.py)."""
        recent = self.recent_canaries_ms
        if recent.maxlen and len(recent) == recent.maxlen:
            return float(np.median(recent))
        return self.canary_reference_ms

    # ------------------------------------------------------------------ lifecycle

    @property
    def pid(self) -> int | None:
        """The child's process id, or None while no child runs."""
        return self._process.pid if self._process is not None else None

    def start(self) -> None:
        """Start the child if it is not running; raises MeasurementError if it cannot start."""
        if self._process is not None and self._process.poll() is None:
            return
        self._discard_process()
        # Kept open for the child's lifetime; closed in _discard_process.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115
        repo_root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo_root, env.get("PYTHONPATH")]))
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent._measure_child",
                str(self.core),
                str(self.settings.child_memory_bytes),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=env,
            cwd=repo_root,
        )
        self._stderr_mark = 0
        ready = self._receive(_CHILD_START_TIMEOUT_S, what="start")
        if not ready.get("ready"):
            raise self._fail(f"child did not start: {ready}")
        if self.settings.canary_runs > 0:
            self._start_canary()

    def _start_canary(self) -> None:
        """Load the canary in the new child and time it a few times for the quiet reference."""
        from agent.builder import build_op_model

        canary = build_op_model(*CANARY_OP)
        self._send_frames({"threads": self.settings.threads, "set_canary": True}, canary)
        reply = self._receive(self.settings.child_timeout_s, what="canary")
        if not reply.get("ok"):
            raise self._fail(f"canary rejected: {reply.get('error')}")
        # Timed like a canary (its own run count, no minimum time), whatever the protocol says.
        calibration = {
            "threads": self.settings.threads,
            "warmup_runs": 0,
            "min_runs": self.settings.canary_runs,
            "min_time_s": 0.0,
            "canary_runs": self.settings.canary_runs,
        }
        for _ in range(_CANARY_CALIBRATION_ROUNDS):
            self._send_frames(calibration, canary)
            self._collect()

    def close(self) -> None:
        """Stop the child: close its stdin, wait briefly, kill it if it lingers."""
        process = self._process
        if process is not None and process.poll() is None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(timeout=_CHILD_EXIT_GRACE_S)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        self._discard_process()

    def __enter__(self) -> MeasurementChild:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __del__(self) -> None:
        process = getattr(self, "_process", None)
        if process is not None and process.poll() is None:
            process.kill()

    # ------------------------------------------------------------------ measuring

    def loads_for(self, weight_bytes: float) -> int:
        """Loads an op with ``weight_bytes`` of weights is timed in: ``near_cache_loads`` within
        ``near_cache_band`` of the core's L2 (see fdiot/settings.py), else 1 (also where the L2's
        size is unknown)."""
        if self.l2_bytes is None or self.settings.near_cache_loads <= 1:
            return 1
        low, high = self.settings.near_cache_band
        near = low * self.l2_bytes <= weight_bytes <= high * self.l2_bytes
        return self.settings.near_cache_loads if near else 1

    def measure(self, model: bytes, weight_bytes: float = 0.0) -> LatencyStats:
        """Measure ``model`` with the settings' protocol; raises MeasurementError."""
        self.submit(model, weight_bytes)
        return self.result()

    def measure_network(self, model: bytes) -> LatencyStats:
        """Measure a whole network (a benchmark job) with the stricter network limits: a canary
        ratio of at most ``network_max_canary_ratio`` and up to ``network_max_remeasure``
        re-measurements. One number that a user reads directly is worth a few more attempts."""
        strict = self.settings.model_copy(
            update={
                "max_canary_ratio": self.settings.network_max_canary_ratio,
                "max_remeasure": self.settings.network_max_remeasure,
                "pause_growth": self.settings.network_pause_growth,
                "disturbed_pause_s": self.settings.network_disturbed_pause_s,
                "min_good_attempts": self.settings.network_min_good_attempts,
            }
        )
        saved, self.settings = self.settings, strict
        try:
            return self.measure(model)
        finally:
            self.settings = saved

    def submit(self, model: bytes, weight_bytes: float = 0.0) -> None:
        """Send ``model`` for its first timed attempt; :meth:`result` collects it.

        ``weight_bytes`` (an op's ``param_bytes``) sets how many loads it is timed in
        (:meth:`loads_for`); 0, as for networks, times it in one.
        """
        if self._pending_model is not None:
            raise RuntimeError("a measurement is already pending; call result() first")
        self._pending_model, self._pending_error = model, None
        self._pending_loads = self.loads_for(weight_bytes)
        self._submitted_at = time.monotonic()
        try:
            self.start()
            self._send(model)
        except MeasurementError as error:
            self._pending_error = error

    def result(self) -> LatencyStats:
        """Collect the submitted model's stats, re-measuring while the spread is too wide."""
        model, error = self._pending_model, self._pending_error
        self._pending_model, self._pending_error = None, None
        if model is None:
            raise RuntimeError("no measurement pending; call submit() first")
        if error is not None:
            raise error
        loads = self._pending_loads
        kept: list[LatencyStats] = []
        attempts_made = 0
        for load in range(loads):
            if load > 0:  # a fresh load: the weights on other pages (settings.near_cache_loads)
                self._send(model, fresh_load=True)
            attempts = [self._collect()]
            while len(attempts) <= self.settings.max_remeasure:
                if len(_good(attempts)) >= self.settings.min_good_attempts:
                    break
                last = attempts[-1]
                if not last.quiet and self.settings.disturbed_pause_s > 0:
                    # Let the disturbance pass; a long one gets a longer wait at each attempt.
                    growth = self.settings.pause_growth ** (len(attempts) - 1)
                    _pause(self.settings.disturbed_pause_s * growth)
                self._send(model)
                attempts.append(self._collect())
            kept.append(_kept(attempts))
            attempts_made += len(attempts)
        measure_s = time.monotonic() - self._submitted_at
        best = min(kept, key=_preference)
        return dataclasses.replace(
            best,
            attempts=attempts_made,
            measure_s=measure_s,
            loads=loads,
            load_medians_ms=[k.median_ms for k in kept] if loads > 1 else None,
        )

    # ------------------------------------------------------------------ wire protocol

    def _send(self, model: bytes, *, fresh_load: bool = False) -> None:
        header: dict[str, Any] = {
            "fresh_load": fresh_load,
            "threads": self.settings.threads,
            "warmup_runs": self.settings.warmup_runs,
            "min_runs": self.settings.min_runs,
            "min_time_s": self.settings.min_time_s,
            "canary_runs": self.settings.canary_runs,
        }
        reference_ms = self.state_reference_ms
        if reference_ms is not None and self.settings.canary_wait_s > 0:
            # Wait in the child for a canary this quiet before timing (see _measure_child).
            limit_ms = reference_ms * self.settings.max_canary_ratio
            header["canary_max_ns"] = int(limit_ms * 1e6)
            header["canary_wait_s"] = self.settings.canary_wait_s
            header["canary_min_cpu_share"] = self.settings.min_cpu_share
        self._send_frames(header, model)

    def _send_frames(self, header: Mapping[str, Any], model: bytes) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        self._stderr_mark = self._stderr_size()
        try:
            for payload in (json.dumps(header).encode(), model):
                process.stdin.write(_FRAME_HEADER.pack(len(payload)))
                process.stdin.write(payload)
            process.stdin.flush()
        except (BrokenPipeError, OSError) as broken:
            raise self._fail(f"child unreachable ({broken})") from None

    def _collect(self) -> LatencyStats:
        reply = self._receive(self.settings.child_timeout_s, what="measurement")
        if not reply.get("ok"):
            raise MeasurementError(
                f"runtime rejected the model: {reply.get('error')}", stderr_tail=self._stderr_tail()
            )
        max_drift = self.settings.max_drift if self.settings.max_drift > 0 else None
        stats = latency_stats(reply["times_ns"], self.settings.max_spread, max_drift)
        # The canary right before and right after the timed runs: the slower of the two says
        # whether the host slowed down at any point of the attempt.
        canary_ms = [
            float(np.median(times)) / 1e6
            for times in (reply.get("canary_ns"), reply.get("canary_after_ns"))
            if times
        ]
        canary_ratio: float | None = None
        reference_ms = None
        if canary_ms:
            self.canaries_ms.extend(canary_ms)
            reference_ms = self.state_reference_ms
            self.recent_canaries_ms.extend(canary_ms)
        if reference_ms is not None:
            canary_ratio = max(canary_ms) / reference_ms
        wall_ns = int(reply.get("wall_ns") or 0)
        cpu_share = int(reply.get("cpu_ns") or 0) / wall_ns if wall_ns > 0 else None
        quiet = (canary_ratio is None or canary_ratio <= self.settings.max_canary_ratio) and (
            cpu_share is None or cpu_share >= self.settings.min_cpu_share
        )
        polls = reply.get("canary_polls")
        return dataclasses.replace(
            stats,
            canary_ratio=canary_ratio,
            cpu_share=cpu_share,
            quiet=quiet,
            canary_polls=None if polls is None else int(polls),
            canary_ms=max(canary_ms) if canary_ms else None,
            state_canary_ms=reference_ms,
        )

    def _receive(self, timeout_s: float, *, what: str) -> dict[str, Any]:
        """Read one JSON frame from the child within ``timeout_s``; MeasurementError otherwise."""
        deadline = time.monotonic() + timeout_s
        header = self._read_exact(_FRAME_HEADER.size, deadline, timeout_s, what)
        (length,) = _FRAME_HEADER.unpack(header)
        reply: dict[str, Any] = json.loads(self._read_exact(length, deadline, timeout_s, what))
        return reply

    def _read_exact(self, size: int, deadline: float, timeout_s: float, what: str) -> bytes:
        process = self._process
        assert process is not None and process.stdout is not None
        fd = process.stdout.fileno()
        chunks: list[bytes] = []
        remaining = size
        while remaining > 0:
            wait_s = deadline - time.monotonic()
            ready, _, _ = select.select([fd], [], [], max(wait_s, 0.0))
            if not ready:
                process.kill()
                raise self._fail(f"{what} timed out after {timeout_s:g} s; child killed")
            chunk = os.read(fd, remaining)
            if not chunk:
                raise self._fail(f"child died during {what}")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def _fail(self, reason: str) -> MeasurementError:
        """Reap the child and describe how it ended; the next use starts a new one."""
        process = self._process
        exit_text = ""
        if process is not None:
            try:
                code = process.wait(timeout=_CHILD_EXIT_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if code < 0:
                exit_text = f" (killed by signal {signal.Signals(-code).name})"
            else:
                exit_text = f" (exit code {code})"
        tail = self._stderr_tail()
        self._discard_process()
        return MeasurementError(reason + exit_text, crashed=True, stderr_tail=tail)

    def _stderr_size(self) -> int:
        if self._stderr is None:
            return 0
        return os.fstat(self._stderr.fileno()).st_size

    def _stderr_tail(self) -> str:
        if self._stderr is None:
            return ""
        size = self._stderr_size()
        start = max(self._stderr_mark, size - _STDERR_TAIL_BYTES)
        self._stderr.seek(start)
        return self._stderr.read(size - start).decode(errors="replace").strip()

    def _discard_process(self) -> None:
        process = self._process
        if process is not None:
            for stream in (process.stdin, process.stdout):
                if stream is not None:
                    with contextlib.suppress(OSError):  # a dead child's pipe refuses the flush
                        stream.close()
        if self._stderr is not None:
            self._stderr.close()
        self._process, self._stderr = None, None


def _pause(seconds: float) -> None:
    """Wait before re-measuring a disturbed attempt (its own function so tests can watch it)."""
    time.sleep(seconds)


def _good(attempts: Sequence[LatencyStats]) -> list[LatencyStats]:
    """The attempts that were quiet and stable (within the drift, or spread, limit)."""
    return [a for a in attempts if a.quiet and a.stable]


def _kept(attempts: Sequence[LatencyStats]) -> LatencyStats:
    """The attempt a sample keeps: the median of its good attempts (the lower one of an even
    count) when it has two or more, else the best by :func:`_preference`."""
    good = sorted(_good(attempts), key=lambda a: a.median_ms)
    if len(good) >= 2:
        return good[(len(good) - 1) // 2]
    return min(attempts, key=_preference)


def _preference(stats: LatencyStats) -> tuple[bool, bool, float]:
    """Sort key of a sample's attempts, best first: quiet, then stable, then the lowest median
    (among quiet attempts the fastest is the least disturbed) or, when none is quiet, the least
    disturbed."""
    closeness = stats.median_ms if stats.quiet else (stats.canary_ratio or 0.0)
    return (not stats.quiet, not stats.stable, closeness)


def measure_tflite(model: bytes, *, settings: Settings | None = None) -> LatencyStats:
    """Measure one model in a fresh child (convenience; reuse a MeasurementChild for many)."""
    with MeasurementChild(settings) as child:
        return child.measure(model)


@dataclass(frozen=True)
class _Prepared:
    index: int
    op_type: str
    config: dict[str, Any]
    features: dict[str, Any]
    model: bytes | None
    error: MeasurementError | None


def measure_configs(
    configs: Iterable[tuple[str, Mapping[str, Any]]], child: MeasurementChild
) -> Iterator[tuple[int, str, dict[str, Any], dict[str, Any], LatencyStats | MeasurementError]]:
    """Build and measure each ``(op_type, config)``, yielding ``(index, op_type, config,
    features, stats or error)`` in order.

    The next model is built in this process while the child measures the current one; a config
    that fails to build or to measure yields a MeasurementError and the loop goes on.
    """
    items = iter(enumerate(configs))

    def prepare() -> _Prepared | None:
        try:
            index, (op_type, config) = next(items)
        except StopIteration:
            return None
        return _prepare(index, op_type, dict(config))

    current = prepare()
    while current is not None:
        if current.model is None:
            assert current.error is not None
            outcome: LatencyStats | MeasurementError = current.error
            following = prepare()
        else:
            child.submit(current.model, float(current.features.get("param_bytes", 0.0)))
            following = prepare()  # overlaps with the child's timed runs
            try:
                outcome = child.result()
            except MeasurementError as error:
                outcome = error
        yield current.index, current.op_type, current.config, current.features, outcome
        current = following


def _prepare(index: int, op_type: str, config: dict[str, Any]) -> _Prepared:
    from agent.builder import build_op_model
    from models.features import cost_features

    try:
        features = dict(cost_features(op_type, config))
        model = build_op_model(op_type, config)
    except Exception as error:  # a bad config fails its sample, not the job
        reason = f"could not build {op_type} {config}: {type(error).__name__}: {error}"
        return _Prepared(index, op_type, config, {}, None, MeasurementError(reason))
    return _Prepared(index, op_type, config, features, model, None)
