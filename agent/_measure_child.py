"""The measurement child: a long-lived process that times ``Interpreter.invoke()`` for the agent.

Started by :class:`agent.runner.MeasurementChild` as ``python -m agent._measure_child CORE
MEMORY_BYTES``. It pins itself to ``CORE``, limits its address space to ``MEMORY_BYTES`` and then
serves requests until its stdin closes. A model that crashes LiteRT kills this process only.

Wire format, both directions: frames of a 4-byte big-endian length and a payload.
Request: a JSON frame ``{"threads", "warmup_runs", "min_runs", "min_time_s", "canary_runs",
"canary_max_ns", "canary_wait_s", "canary_min_cpu_share"}`` (the last three optional) then a
frame holding the .tflite bytes.
Reply: one JSON frame, ``{"ok": true, "times_ns": [...], "canary_ns": [...], "canary_after_ns":
[...], "canary_polls": N, "cpu_ns": N, "wall_ns": N}`` (one wall time per timed ``invoke()``, in
nanoseconds; the canary's times right before and right after them, empty when no canary is set or
``canary_runs`` is 0; how many times the canary was timed waiting for a quiet window; this
process's CPU time and the wall time over the timed loop) or ``{"ok": false, "error": "..."}`` for
a Python-level error (bad model, wrong op), after which the child keeps serving.

A request whose header holds ``{"set_canary": true}`` makes its model the canary: a small fixed
model kept loaded, timed for ``canary_runs`` invokes right before and right after each measured
model so that the parent can tell a slowed-down host (another tenant, a busy sibling core) from a
slow model.

Deliberately imports nothing of the farm: no pydantic, no TensorFlow, a fast start.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import statistics
import struct
import sys
import time
from typing import Any, BinaryIO

_FRAME_HEADER = struct.Struct(">I")


def read_frame(stream: BinaryIO) -> bytes | None:
    """Read one frame; ``None`` at a clean end of stream."""
    header = stream.read(_FRAME_HEADER.size)
    if len(header) < _FRAME_HEADER.size:
        return None
    (length,) = _FRAME_HEADER.unpack(header)
    payload = stream.read(length)
    if len(payload) < length:
        return None
    return payload


def write_frame(stream: BinaryIO, payload: bytes) -> None:
    stream.write(_FRAME_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


class _Timer:
    """Keeps the last model's interpreter: a re-measurement skips loading and delegate setup."""

    def __init__(self) -> None:
        self._model_sha256: str | None = None
        self._interpreter: Any = None
        self._canary: Any = None
        self.stage = "idle"  # what the last request was doing, named in error replies

    def set_canary(self, model: bytes, threads: int) -> None:
        """Load ``model`` as the canary (kept apart from the measured model's interpreter)."""
        self._canary = None
        self._canary = load_interpreter(model, threads, self)

    def time_invokes(
        self,
        model: bytes,
        threads: int,
        warmup_runs: int,
        min_runs: int,
        min_time_s: float,
        canary_runs: int = 0,
        canary_max_ns: int | None = None,
        canary_wait_s: float = 0.0,
        canary_min_cpu_share: float = 0.0,
        fresh_load: bool = False,
    ) -> dict[str, Any]:
        """Time the canary, then warm up and time the model's invokes until both ``min_runs`` and
        ``min_time_s`` are reached, then time the canary again.

        With ``canary_max_ns``, a canary whose median is above it, or whose process got less than
        ``canary_min_cpu_share`` of the core while it ran (another process time-slices the core:
        the median of short invokes does not show that), is timed again every
        :data:`_CANARY_POLL_S` for up to ``canary_wait_s``: the model is timed in the next quiet
        window instead of the disturbed one (``canary_polls`` counts the canary timings).

        ``fresh_load`` loads the model again even if it is the one loaded, while the previous
        interpreter is still held, so that the new one's buffers sit on other pages.
        """
        interpreter = self._interpreter_for(model, threads, fresh=fresh_load)
        canary_ns: list[int] = []
        polls = 0
        if self._canary is not None and canary_runs > 0:
            self.stage = "canary"
            deadline = time.monotonic() + canary_wait_s
            while True:
                cpu_ns, wall_ns = time.process_time_ns(), time.perf_counter_ns()
                canary_ns = self._time_canary(canary_runs)
                share = (time.process_time_ns() - cpu_ns) / max(time.perf_counter_ns() - wall_ns, 1)
                polls += 1
                if canary_max_ns is None or (
                    statistics.median(canary_ns) <= canary_max_ns and share >= canary_min_cpu_share
                ):
                    break
                if time.monotonic() >= deadline:
                    break
                time.sleep(_CANARY_POLL_S)
        self.stage = "invoke"
        cpu_before_ns, wall_before_ns = time.process_time_ns(), time.perf_counter_ns()
        times_ns = time_invokes(interpreter.invoke, warmup_runs, min_runs, int(min_time_s * 1e9))
        cpu_ns = time.process_time_ns() - cpu_before_ns
        wall_ns = time.perf_counter_ns() - wall_before_ns
        canary_after_ns: list[int] = []
        if self._canary is not None and canary_runs > 0:
            self.stage = "canary"
            canary_after_ns = self._time_canary(canary_runs)
        return {
            "times_ns": times_ns,
            "canary_ns": canary_ns,
            "canary_after_ns": canary_after_ns,
            "canary_polls": polls,
            "cpu_ns": cpu_ns,
            "wall_ns": wall_ns,
        }

    def _time_canary(self, runs: int) -> list[int]:
        return time_invokes(self._canary.invoke, _CANARY_WARMUP_RUNS, runs, 0)

    def _interpreter_for(self, model: bytes, threads: int, fresh: bool = False) -> Any:
        sha256 = hashlib.sha256(model).hexdigest() + f"/{threads}"
        if sha256 == self._model_sha256:
            if not fresh:
                return self._interpreter
            # A fresh load of the same model is made while the held one is still allocated, so
            # that its buffers cannot reuse that memory; the old one is freed when replaced.
        else:
            # Free the previous model before loading the next (and forget it if loading fails).
            self._interpreter, self._model_sha256 = None, None
        interpreter = load_interpreter(model, threads, self)
        self._interpreter, self._model_sha256 = interpreter, sha256
        return interpreter


# Untimed canary invokes before its timed ones: the measured model ran last and owns the caches.
_CANARY_WARMUP_RUNS = 3
# Pause between canary timings while waiting for a quiet window: the 20-invoke canary takes
# 3-10 ms, and the slow spells seen on one VM host lasted 0.5-60 s (canary 1.25-2.4x).
_CANARY_POLL_S = 0.02


def time_invokes(invoke: Any, warmup_runs: int, min_runs: int, min_time_ns: int) -> list[int]:
    """Call ``invoke`` ``warmup_runs`` times, then time calls until both limits are reached."""
    for _ in range(warmup_runs):
        invoke()
    times_ns: list[int] = []
    clock = time.perf_counter_ns
    started_ns = clock()
    while len(times_ns) < min_runs or clock() - started_ns < min_time_ns:
        before = clock()
        invoke()
        times_ns.append(clock() - before)
    return times_ns


def load_interpreter(model: bytes, threads: int, timer: _Timer | None = None) -> Any:
    """An interpreter for ``model`` with tensors allocated and random inputs set (``timer``'s
    stage says how far it got, for the child's error replies)."""
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    timer = timer or _Timer()
    timer.stage = "load"
    interpreter = Interpreter(model_content=model, num_threads=threads)
    timer.stage = "allocate_tensors"
    interpreter.allocate_tensors()
    timer.stage = "set inputs"
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        shape = tuple(int(d) for d in detail["shape"])
        dtype = np.dtype(detail["dtype"])
        if dtype.kind == "f":
            data = rng.random(shape).astype(dtype)
        else:
            data = rng.integers(0, 2, size=shape).astype(dtype)
        interpreter.set_tensor(detail["index"], data)
    return interpreter


def main(argv: list[str]) -> int:
    core, memory_bytes = int(argv[0]), int(argv[1])
    if core >= 0:
        os.sched_setaffinity(0, {core})
    if memory_bytes > 0:
        resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    # Replies go over a private copy of stdout; fd 1 then points at stderr, so that native code
    # printing to stdout (LiteRT's INFO lines) cannot corrupt the framing.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    requests = sys.stdin.buffer

    from ai_edge_litert.interpreter import Interpreter  # noqa: F401  load the runtime before "ready"

    write_frame(
        replies,
        json.dumps(
            {
                "ok": True,
                "ready": True,
                "pid": os.getpid(),
                "cpu_affinity": sorted(os.sched_getaffinity(0)),
            }
        ).encode(),
    )
    timer = _Timer()
    while True:
        header = read_frame(requests)
        model = read_frame(requests) if header is not None else None
        if header is None or model is None:
            return 0
        request = json.loads(header)
        try:
            if request.get("set_canary"):
                timer.set_canary(model, threads=int(request["threads"]))
                reply: dict[str, Any] = {"ok": True}
            else:
                timings = timer.time_invokes(
                    model,
                    threads=int(request["threads"]),
                    warmup_runs=int(request["warmup_runs"]),
                    min_runs=int(request["min_runs"]),
                    min_time_s=float(request["min_time_s"]),
                    canary_runs=int(request.get("canary_runs", 0)),
                    canary_max_ns=request.get("canary_max_ns"),
                    canary_wait_s=float(request.get("canary_wait_s", 0.0)),
                    canary_min_cpu_share=float(request.get("canary_min_cpu_share", 0.0)),
                    fresh_load=bool(request.get("fresh_load", False)),
                )
                reply = {"ok": True, **timings}
        except Exception as error:  # a bad model fails this request, not the child
            text = f"{type(error).__name__}: {error}".strip()
            reply = {"ok": False, "error": f"{timer.stage} failed: {text}"}
        write_frame(replies, json.dumps(reply).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
