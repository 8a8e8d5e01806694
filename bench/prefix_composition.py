"""Where in a network running its ops together costs: prefixes timed whole against their ops alone.

bench.decompose gives one ratio per network: its whole time over the sum of its ops timed alone.
This script cuts a zoo network after evenly spaced residual additions (``--cuts`` of them), so
that each prefix ends where a block ends, converts every prefix, and times it as bench.decompose
times a network (whole before and after its ops, each distinct op alone once). Consecutive
prefixes give each stretch of the network (a segment) its own ratio: whether the cost sits in
the early stages, with large activations and small weights, or in the late ones, whose weights
exceed the cache. With ``--model`` (a device model's JSON, as bench.decompose takes it) each
prefix and segment also gets the model's own ratio: its network prediction over the sum of its
single-op predictions, i.e. what the network terms (extra curve, reload, DRAM floor) add. Both
ratios are measured or predicted in one speed state, so a host that changed speed between runs
does not move them.

Prints a table and writes ``bench/results/prefix_composition.json``. Run it with the farm
stopped; three mobile CNNs with seven cuts each took 12 minutes on the fifth development VM.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import write_results
from bench.decompose import decompose_flatbuffer, load_model, measuring_child
from bench.zoo import _SEED, NETWORKS, _keras, convert
from models.features import OpInstance, parse_tflite
from models.timemodel import DeviceTimeModel, fused_indices

RESULTS_DIR = Path(__file__).resolve().parent / "results"
# The zoo's networks whose weights exceed a 2 MB L2 and that the third fifth-VM campaign
# under-predicted by 7.7-8.0%: where their composition cost sits is the question.
DEFAULT_NETWORKS = ("mobilenetv2_a100_128", "mobilenetv3large_128", "efficientnetb0_128")
DEFAULT_CUTS = 7


def cut_points(layers: Sequence[tuple[str, str]], cuts: int) -> list[str]:
    """Names of at most ``cuts`` residual additions (``Add`` layers) spread evenly over
    ``layers`` (``(name, class name)`` in order), the last addition always among them."""
    adds = [name for name, kind in layers if kind == "Add"]
    if not adds or cuts < 1:
        return []
    if len(adds) <= cuts:
        return adds
    step = len(adds) / cuts
    return [adds[round((i + 1) * step) - 1] for i in range(cuts)]


def model_ratio(model: DeviceTimeModel, ops: Sequence[OpInstance]) -> tuple[float, float]:
    """The model's network prediction (ms) and the sum of its single-op predictions with one
    invoke overhead (ms): their ratio is what its network terms add."""
    fused = fused_indices(ops)
    ops_ms = model.overhead_ms + sum(
        model.predict_op(op.op_type, op.config, op.features)[0]
        for op in ops
        if op.index not in fused
    )
    return model.predict_network(ops).total_ms, ops_ms


def segments(prefixes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each stretch between consecutive prefixes of one network: whole and alone time added
    (ms), their ratio, and the model's (when the prefixes carry ``predicted_ms``)."""
    out = []
    previous: dict[str, Any] | None = None
    for prefix in prefixes:
        whole_ms = min(prefix["network_ms"])
        start = previous or {"cut": "input", "param_bytes": 0.0}
        before_whole = min(previous["network_ms"]) if previous else 0.0
        before_alone = previous["sum_alone_ms"] if previous else 0.0
        row: dict[str, Any] = {
            "from": start["cut"],
            "to": prefix["cut"],
            "param_bytes": prefix["param_bytes"] - start["param_bytes"],
            "whole_ms": whole_ms - before_whole,
            "alone_ms": prefix["sum_alone_ms"] - before_alone,
        }
        row["ratio"] = row["whole_ms"] / row["alone_ms"] if row["alone_ms"] > 0 else None
        if "predicted_ms" in prefix:
            before = previous or {"predicted_ms": 0.0, "predicted_ops_ms": 0.0}
            predicted = prefix["predicted_ms"] - before["predicted_ms"]
            ops_ms = prefix["predicted_ops_ms"] - before["predicted_ops_ms"]
            row["model_ratio"] = predicted / ops_ms if ops_ms > 0 else None
        out.append(row)
        previous = prefix
    return out


def prefix_flatbuffers(name: str, cuts: int) -> list[tuple[str, bytes]]:
    """``(cut, .tflite)`` of each prefix of zoo network ``name``, the whole network last."""
    keras = _keras()
    keras.utils.set_random_seed(_SEED)
    full = NETWORKS[name].build_fn()
    names = cut_points([(layer.name, type(layer).__name__) for layer in full.layers], cuts)
    out = [(cut, convert(keras.Model(full.input, full.get_layer(cut).output))) for cut in names]
    out.append(("full", convert(full)))
    keras.backend.clear_session()
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--networks", nargs="+", choices=sorted(NETWORKS), default=list(DEFAULT_NETWORKS)
    )
    parser.add_argument("--cuts", type=int, default=DEFAULT_CUTS, help="prefixes per network")
    parser.add_argument("--model", type=Path, help="device model JSON for the model's ratios")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "prefix_composition.json")
    args = parser.parse_args(argv)
    model = load_model(args.model)
    alone: dict[Any, float | None] = {}
    networks = []
    print(f"{'network':<22}{'prefix':<24}{'ops':>5}{'weights MB':>11}{'whole ms':>10}"
          f"{'alone ms':>10}{'ratio':>7}{'model':>7}")  # fmt: skip
    with measuring_child() as (child, overhead_ms):
        for name in args.networks:
            prefixes = []
            for cut, flatbuffer in prefix_flatbuffers(name, args.cuts):
                ops = parse_tflite(flatbuffer)
                result = decompose_flatbuffer(child, flatbuffer, overhead_ms, alone, ops)
                prefix = {
                    "cut": cut,
                    "ops": len(ops),
                    "param_bytes": sum(float(op.features.get("param_bytes", 0.0)) for op in ops),
                    **{k: v for k, v in result.items() if k != "ops"},
                }
                line = (f"{name:<22}{cut:<24}{len(ops):>5}{prefix['param_bytes'] / 1e6:>11.2f}"
                        f"{min(result['network_ms']):>10.3f}{result['sum_alone_ms']:>10.3f}"
                        f"{result['ratio']:>7.3f}")  # fmt: skip
                if model is not None:
                    prefix["predicted_ms"], prefix["predicted_ops_ms"] = model_ratio(model, ops)
                    line += f"{prefix['predicted_ms'] / prefix['predicted_ops_ms']:>7.3f}"
                print(line, flush=True)
                prefixes.append(prefix)
            networks.append({"name": name, "prefixes": prefixes, "segments": segments(prefixes)})
    print("ratio: whole / ops alone (measured); model: network prediction / its ops' predictions")
    print(f"\n{'network':<22}{'segment':<48}{'weights MB':>11}{'ratio':>7}{'model':>7}")
    for network in networks:
        for seg in network["segments"]:
            span = f"{seg['from']} -> {seg['to']}"
            ratio = "-" if seg["ratio"] is None else f"{seg['ratio']:.3f}"
            modelled = seg.get("model_ratio")
            print(f"{network['name']:<22}{span:<48}{seg['param_bytes'] / 1e6:>11.2f}{ratio:>7}"
                  f"{'-' if modelled is None else f'{modelled:.3f}':>7}")  # fmt: skip
    write_results(args.out, {"overhead_ms": overhead_ms, "cuts": args.cuts, "networks": networks})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
