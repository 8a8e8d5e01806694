"""Each zoo network measured whole against the sum of its ops measured alone.

A network's prediction is a sum of single-op predictions, so it carries two errors: the trees'
error on each op, and what running the ops together adds or saves (weights evicted by the other
ops, intermediate tensors, the runtime's dispatch) that no single-op measurement sees. This
script separates them. For every network: the network is timed (farm protocol, twice: before and
after its ops), then every op that the runtime does not fuse away is built as a single-op model
and timed alone in the same process (each distinct configuration once); the sum of the ops alone
is ``invoke overhead + sum(op alone - invoke overhead)``. With ``--model`` (a device model's JSON,
``fdiot models --device ID --export M.json``, i.e. ``GET /models/{device}/export``) each op's
prediction is set against its time alone, per op type: the op-level error on real networks'
layers, apart from composition.

Prints a table and writes ``bench/results/decompose.json``. Run it with the farm stopped and the
zoo built (``python -m bench.zoo``); the whole zoo took 29 minutes on this VM (recurrent
single-op models go through the TFLite converter).
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from agent.builder import build_op_model
from agent.runner import MeasurementChild, MeasurementError
from bench import write_results
from bench.zoo import NETWORKS, build_tflite
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.features import OpInstance, parse_tflite
from models.opspace import config_key
from models.timemodel import DeviceTimeModel, fused_indices

RESULTS_DIR = Path(__file__).resolve().parent / "results"


@contextmanager
def measuring_child() -> Iterator[tuple[MeasurementChild, float]]:
    """The agent's measurement child on the reserved core (this process moved off it) and the
    invoke overhead (ms) it times first: what every script that times networks against their
    ops alone starts with."""
    settings = get_settings()
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with MeasurementChild(settings) as child:
        yield child, child.measure(build_op_model("invoke_overhead", {})).median_ms


def load_model(path: Path | None) -> DeviceTimeModel | None:
    """A device model from its exported JSON (``fdiot models --export``); None without a path."""
    return DeviceTimeModel.from_dict(json.loads(path.read_text())) if path else None


def decompose_flatbuffer(
    child: MeasurementChild,
    flatbuffer: bytes,
    overhead_ms: float,
    alone: dict[Any, float | None],
    ops: Sequence[OpInstance] | None = None,
) -> dict[str, Any]:
    """One .tflite network: its two whole timings and each op's time alone (ms; None if
    unbuildable), the ops' configurations timed once each across calls (``alone``). ``ops``:
    the network's parsed ops, when the caller has them already."""
    ops = parse_tflite(flatbuffer) if ops is None else ops
    fused = fused_indices(ops)
    before_ms = child.measure_network(flatbuffer).median_ms
    rows = []
    for op in ops:
        row: dict[str, Any] = {"index": op.index, "op_type": op.op_type, "config": op.config}
        if op.index in fused or op.fallback:
            row["skipped"] = fused.get(op.index, "no op type of its own")
            rows.append(row)
            continue
        key = (op.op_type, config_key(op.config))
        if key not in alone:
            try:
                alone[key] = child.measure(build_op_model(op.op_type, op.config)).median_ms
            except (MeasurementError, KeyError, ValueError) as exc:
                alone[key] = None
                row["error"] = str(exc)[:200]
        row["alone_ms"] = alone[key]
        rows.append(row)
    after_ms = child.measure_network(flatbuffer).median_ms
    timed = [r["alone_ms"] for r in rows if r.get("alone_ms") is not None]
    sum_alone_ms = overhead_ms + sum(t - overhead_ms for t in timed)
    network_ms = min(before_ms, after_ms)
    return {
        "network_ms": [before_ms, after_ms],
        "sum_alone_ms": sum_alone_ms,
        "ratio": network_ms / sum_alone_ms,
        "ops_timed": len(timed),
        "ops_unbuildable": sum(1 for r in rows if "error" in r),
        "ops": rows,
    }


def decompose(
    child: MeasurementChild, name: str, overhead_ms: float, alone: dict[Any, float | None]
) -> dict[str, Any]:
    """One zoo network: :func:`decompose_flatbuffer` with its name and family."""
    result = decompose_flatbuffer(child, build_tflite(name), overhead_ms, alone)
    return {"name": name, "family": NETWORKS[name].family, **result}


def predicted(model: DeviceTimeModel, result: dict[str, Any], overhead_ms: float) -> None:
    """Add the model's single-op predictions (ms) beside each op's time alone, in place."""
    total = overhead_ms
    for row in result["ops"]:
        if row.get("alone_ms") is None:
            continue
        row["predicted_ms"] = model.predict_op(row["op_type"], row["config"])[0]
        total += row["predicted_ms"]
    result["sum_predicted_ms"] = total


def by_op_type(results: Sequence[dict[str, Any]], overhead_ms: float) -> dict[str, Any]:
    """Per op type over all networks' ops: time alone, predicted, bias and time-weighted error."""
    out: dict[str, dict[str, float]] = {}
    for result in results:
        for row in result["ops"]:
            if row.get("predicted_ms") is None:
                continue
            alone_op_ms = max(row["alone_ms"] - overhead_ms, 0.0)
            agg = out.setdefault(row["op_type"], {"ops": 0, "alone_ms": 0.0, "predicted_ms": 0.0,
                                                  "abs_error_ms": 0.0})  # fmt: skip
            agg["ops"] += 1
            agg["alone_ms"] += alone_op_ms
            agg["predicted_ms"] += row["predicted_ms"]
            agg["abs_error_ms"] += abs(row["predicted_ms"] - alone_op_ms)
    for agg in out.values():
        agg["bias_pct"] = 100.0 * (agg["predicted_ms"] / agg["alone_ms"] - 1.0)
        agg["time_weighted_error_pct"] = 100.0 * agg["abs_error_ms"] / agg["alone_ms"]
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", nargs="+", choices=sorted(NETWORKS), default=list(NETWORKS))
    parser.add_argument("--model", type=Path, help="device model JSON to compare per op")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "decompose.json")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    alone: dict[Any, float | None] = {}
    results = []
    with measuring_child() as (child, overhead_ms):
        for name in args.networks:
            result = decompose(child, name, overhead_ms, alone)
            if model is not None:
                predicted(model, result, overhead_ms)
            results.append(result)
            line = (f"{name:<24}{min(result['network_ms']):>10.3f}{result['sum_alone_ms']:>10.3f}"
                    f"{result['ratio']:>7.3f}")  # fmt: skip
            if model is not None:
                line += f"{result['sum_predicted_ms']:>10.3f}"
                line += f"{result['sum_predicted_ms'] / result['sum_alone_ms'] - 1:>+9.1%}"
            print(line, flush=True)
    print(f"columns: network, whole ms, sum of ops alone ms, whole / sum"
          f"{', sum of predicted ops ms, predicted / alone' if model else ''}")  # fmt: skip
    out: dict[str, Any] = {"overhead_ms": overhead_ms, "networks": results}
    if model is not None:
        out["by_op_type"] = by_op_type(results, overhead_ms)
        print(f"{'op type':<18}{'ops':>5}{'alone ms':>10}{'bias':>8}{'|err| / time':>14}")
        for op_type, agg in sorted(out["by_op_type"].items(), key=lambda kv: -kv[1]["alone_ms"]):
            print(f"{op_type:<18}{agg['ops']:>5.0f}{agg['alone_ms']:>10.2f}"
                  f"{agg['bias_pct']:>+7.1f}%{agg['time_weighted_error_pct']:>13.1f}%")  # fmt: skip
    write_results(args.out, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
