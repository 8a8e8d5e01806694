"""Is an op's label a property of its configuration, or of the process that timed it?

Each configuration is timed twice in each of ``--children`` fresh measurement children (the
agent's own :class:`agent.runner.MeasurementChild`, one process after another on the measurement
core). Two figures per configuration: **within** a process, the mean of ``|first / second - 1|``;
**across** processes, ``max / min - 1`` of each process's faster time. An op whose weights sit
well inside or well beyond the core's L2 times alike in every process; one whose working set is
near the L2's size can land its buffers on pages that share cache sets (the L2 is physically
indexed, and this host gives no huge pages without ``madvise``), so a process can keep its label
a few percent or tens of percent off another's, and re-timing in the same process does not show
it. The default configurations are batch-1 dense layers from 0.5 to 4.2 MB of weights (L2 2 MB
on the development VMs), two LSTM layers at the same edge and a compute-bound conv as control.

Prints a table and writes ``bench/results/process_spread.json``. Run it with the farm stopped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.builder import build_op_model
from agent.runner import MeasurementChild
from bench import write_results
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.features import cost_features

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CHILDREN = 5


def _dense(cin: int, cout: int, activation: str = "none") -> tuple[str, dict[str, Any]]:
    return "fully_connected", {"rows": 1, "cin": cin, "cout": cout, "activation": activation}


def _lstm(units: int, cin: int, seq_len: int) -> tuple[str, dict[str, Any]]:
    return "lstm", {"units": units, "cin": cin, "seq_len": seq_len, "return_sequences": 0}


# Dense layers whose weights (cin * cout * 4 bytes) step from 0.52 MB to 4.2 MB, several of them
# configurations of the fifth VM's campaigns whose labels sat 20-66% off the tree near 2 MB; the
# LSTMs carry 1.1 MB and 2.5 MB of weights; the conv is compute-bound (weights 0.6 MB, 1.6 ms).
DEFAULT_CONFIGS: tuple[tuple[str, dict[str, Any]], ...] = (
    _dense(256, 512, "relu"),
    _dense(584, 576),
    _dense(584, 577),
    _dense(512, 896, "relu6"),
    _dense(512, 1024, "relu6"),
    _dense(755, 737, "relu6"),
    _dense(528, 1056),
    _dense(960, 704),
    _dense(1024, 1024),
    _lstm(256, 16, 64),
    _lstm(384, 5, 119),
    (
        "conv2d",
        dict(
            h=14, w=14, cin=256, cout=256, kh=3, kw=3, stride=1, padding="same", activation="relu"
        ),
    ),
)


def spreads(per_child: Sequence[Sequence[float]]) -> dict[str, float]:
    """``per_child``: each process's timings (ms) of one configuration, in order. Within: mean
    ``|t_0 / t_1 - 1|`` over processes with two timings or more; across: ``max / min - 1`` of
    each process's fastest timing (both fractions)."""
    within = [abs(t[0] / t[1] - 1.0) for t in per_child if len(t) >= 2]
    fastest = [min(t) for t in per_child if t]
    return {
        "within": float(np.mean(within)) if within else 0.0,
        "across": max(fastest) / min(fastest) - 1.0 if fastest else 0.0,
        "median_ms": float(np.median(fastest)) if fastest else 0.0,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=DEFAULT_CHILDREN)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "process_spread.json")
    args = parser.parse_args(argv)
    settings = get_settings()
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    models = [build_op_model(op_type, config) for op_type, config in DEFAULT_CONFIGS]
    timings: list[list[list[float]]] = [[] for _ in DEFAULT_CONFIGS]
    for _ in range(args.children):
        with MeasurementChild(settings) as child:
            runs: list[list[float]] = [[] for _ in DEFAULT_CONFIGS]
            for _repeat in range(2):
                for i, model in enumerate(models):
                    runs[i].append(child.measure(model).median_ms)
        for i, times in enumerate(runs):
            timings[i].append(times)
    rows = []
    print(f"{'op type':<17}{'configuration':<44}{'weights MB':>11}{'median ms':>10}"
          f"{'within':>8}{'across':>8}")  # fmt: skip
    for (op_type, config), per_child in zip(DEFAULT_CONFIGS, timings, strict=True):
        row: dict[str, Any] = {
            "op_type": op_type,
            "config": config,
            "param_bytes": float(cost_features(op_type, config)["param_bytes"]),
            "timings_ms": per_child,
            **spreads(per_child),
        }
        rows.append(row)
        shown = ", ".join(f"{k}={v}" for k, v in config.items() if k != "activation")
        print(f"{op_type:<17}{shown:<44}{row['param_bytes'] / 1e6:>11.2f}{row['median_ms']:>10.4f}"
              f"{row['within']:>8.1%}{row['across']:>8.1%}")  # fmt: skip
    print(
        "within: |first / second - 1| in one process (mean); across: max / min - 1 of the "
        "processes' fastest"
    )
    write_results(args.out, {"children": args.children, "configs": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
