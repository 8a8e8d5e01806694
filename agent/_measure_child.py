"""The measurement child: a long-lived process that times ``Interpreter.invoke()`` for the agent.

Started by :class:`agent.runner.MeasurementChild` as ``python -m agent._measure_child CORE
MEMORY_BYTES``. It pins itself to ``CORE``, limits its address space to ``MEMORY_BYTES`` and then
serves requests until its stdin closes. A model that crashes LiteRT kills this process only.

Wire format, both directions: frames of a 4-byte big-endian length and a payload.
Request: a JSON frame ``{"threads", "warmup_runs", "min_runs", "min_time_s"}`` then a frame holding
the .tflite bytes. Reply: one JSON frame, ``{"ok": true, "times_ns": [...]}`` (one wall time per
timed ``invoke()``, in nanoseconds) or ``{"ok": false, "error": "..."}`` for a Python-level error
(bad model, wrong op), after which the child keeps serving.

Deliberately imports nothing of the farm: no pydantic, no TensorFlow, a fast start.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
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
        self.stage = "idle"  # what the last request was doing, named in error replies

    def time_invokes(
        self, model: bytes, threads: int, warmup_runs: int, min_runs: int, min_time_s: float
    ) -> list[int]:
        """Warm up, then time invokes until both ``min_runs`` and ``min_time_s`` are reached."""
        interpreter = self._interpreter_for(model, threads)
        self.stage = "invoke"
        invoke = interpreter.invoke
        for _ in range(warmup_runs):
            invoke()
        times_ns: list[int] = []
        clock = time.perf_counter_ns
        min_time_ns = int(min_time_s * 1e9)
        started_ns = clock()
        while len(times_ns) < min_runs or clock() - started_ns < min_time_ns:
            before = clock()
            invoke()
            times_ns.append(clock() - before)
        return times_ns

    def _interpreter_for(self, model: bytes, threads: int) -> Any:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        sha256 = hashlib.sha256(model).hexdigest() + f"/{threads}"
        if sha256 == self._model_sha256:
            return self._interpreter
        # Free the previous model before loading the next (and forget it if loading fails).
        self._interpreter, self._model_sha256 = None, None
        self.stage = "load"
        interpreter = Interpreter(model_content=model, num_threads=threads)
        self.stage = "allocate_tensors"
        interpreter.allocate_tensors()
        self.stage = "set inputs"
        rng = np.random.default_rng(0)
        for detail in interpreter.get_input_details():
            shape = tuple(int(d) for d in detail["shape"])
            dtype = np.dtype(detail["dtype"])
            if dtype.kind == "f":
                data = rng.random(shape).astype(dtype)
            else:
                data = rng.integers(0, 2, size=shape).astype(dtype)
            interpreter.set_tensor(detail["index"], data)
        self._interpreter, self._model_sha256 = interpreter, sha256
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
            times_ns = timer.time_invokes(
                model,
                threads=int(request["threads"]),
                warmup_runs=int(request["warmup_runs"]),
                min_runs=int(request["min_runs"]),
                min_time_s=float(request["min_time_s"]),
            )
            reply: dict[str, Any] = {"ok": True, "times_ns": times_ns}
        except Exception as error:  # a bad model fails this request, not the child
            text = f"{type(error).__name__}: {error}".strip()
            reply = {"ok": False, "error": f"{timer.stage} failed: {text}"}
        write_frame(replies, json.dumps(reply).encode())


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
