"""Is an op's label a property of its configuration, or of the load that timed it?

Each configuration is loaded ``--loads`` times in each of ``--children`` fresh measurement
children (the agent's own :class:`agent.runner.MeasurementChild`, one process after another on the
measurement core), and each load is timed twice back to back. The child keeps only the last
model's interpreter, and the configurations are measured in turn, so every load allocates the
weights anew. Per configuration:

- **same load**: mean ``|first / second - 1|`` of the two back-to-back timings of one load;
- **reload**: mean ``|load 1 / load 2 - 1|`` of one process's loads (each load's faster time);
- **across**: ``max / min - 1`` over the processes of their first load's time: how far apart
  two labels of one configuration can sit when each is one load, as the agent times a sample;
- **best of loads**: the same over each process's fastest load.

An op whose weights sit well inside or well beyond the core's L2 times alike in every load; one
whose working set is near the L2's size can land its buffers on pages that share cache sets (the
L2 is physically indexed, and this host gives no huge pages without ``madvise``), so one load
can time a few percent or tens of percent off another, while re-timing the same load does not
show it. The default configurations are batch-1 dense layers from 0.5 to 4.2 MB of weights (L2
2 MB on the development VMs), two LSTM layers at the same edge and a compute-bound conv as
control. (Results written before 2026-12-03 timed each load once: their ``within`` is the reload
figure here.)

``--malloc-hugetlb`` starts the children with ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` (glibc
2.35 and later: malloc asks for transparent huge pages with ``madvise``, which a host in
``madvise`` mode then grants), so the weights sit on 2 MB pages whose cache-set placement does not
depend on the process. Each child's ``AnonHugePages`` (from ``/proc/PID/smaps_rollup``) is recorded
so the run shows whether huge pages were really granted.

Prints a table and writes ``bench/results/process_spread.json``. Run it with the farm stopped.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.builder import build_op_model
from agent.environment import l2_cache_bytes
from agent.runner import MeasurementChild, measurement_core
from bench import read_json, write_results
from fdiot.processes import reserve_measurement_core
from fdiot.settings import get_settings
from models.features import cost_features

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_CHILDREN = 5
DEFAULT_LOADS = 2
# glibc's tunable (2.35+): 1 = madvise(MADV_HUGEPAGE) on malloc's own mmap and sbrk memory.
MALLOC_HUGETLB_TUNABLE = "glibc.malloc.hugetlb=1"


def anon_huge_pages_kb(pid: int | None) -> int | None:
    """``AnonHugePages`` of a process in kB, or None where the kernel does not say."""
    if pid is None:
        return None
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    return None


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


def spreads(per_child: Sequence[Sequence[Sequence[float]]]) -> dict[str, float]:
    """``per_child[c][l]``: the back-to-back timings (ms) of load ``l`` in process ``c``.

    Returns the fractions ``same_load``, ``reload``, ``across`` and ``best_of_loads`` (see the
    module docstring; 0 where there are too few timings for one) and ``median_ms``, the median
    over processes of their first load's time. A load's time is the faster of its timings.
    """
    same = [abs(t[0] / t[1] - 1.0) for loads in per_child for t in loads if len(t) >= 2]
    load_ms = [[min(t) for t in loads if t] for loads in per_child]
    load_ms = [loads for loads in load_ms if loads]
    reload = [abs(loads[0] / loads[1] - 1.0) for loads in load_ms if len(loads) >= 2]
    first = [loads[0] for loads in load_ms]
    best = [min(loads) for loads in load_ms]
    return {
        "same_load": float(np.mean(same)) if same else 0.0,
        "reload": float(np.mean(reload)) if reload else 0.0,
        "across": max(first) / min(first) - 1.0 if first else 0.0,
        "best_of_loads": max(best) / min(best) - 1.0 if best else 0.0,
        "median_ms": float(np.median(first)) if first else 0.0,
    }


def near_cache_summary(
    rows: Sequence[Mapping[str, Any]], l2_bytes: float, band: tuple[float, float]
) -> dict[str, Any]:
    """Means of the spreads over the rows whose weights lie within ``band`` times ``l2_bytes``
    (the agent's ``near_cache_band``): what timing such an op in its fastest of several loads
    (``best_of_loads``) does to how far apart two labels can sit, against one load
    (``across``)."""
    near = [r for r in rows if band[0] * l2_bytes <= float(r["param_bytes"]) <= band[1] * l2_bytes]
    out: dict[str, Any] = {"l2_bytes": l2_bytes, "band": list(band), "configs": len(near)}
    for key in ("same_load", "reload", "across", "best_of_loads"):
        out[f"{key}_mean"] = float(np.mean([r[key] for r in near])) if near else None
    return out


def print_summary(summary: Mapping[str, Any]) -> None:
    """One line of :func:`near_cache_summary`."""
    if not summary["configs"]:
        print("no configuration within the band")
        return
    print(
        f"{summary['configs']} configurations within {summary['band'][0]}-{summary['band'][1]}x "
        f"the L2 ({summary['l2_bytes'] / 2**20:.1f} MiB), means: same load "
        f"{summary['same_load_mean']:.1%}, reload {summary['reload_mean']:.1%}, across "
        f"{summary['across_mean']:.1%}, best of loads {summary['best_of_loads_mean']:.1%}"
    )


def summarize(paths: Sequence[Path], l2_bytes: float, band: tuple[float, float]) -> None:
    """Add :func:`near_cache_summary` to result documents written before it existed."""
    for path in paths:
        document = read_json(path)
        document["near_cache"] = near_cache_summary(document["configs"], l2_bytes, band)
        print(path.name, end=": ")
        print_summary(document["near_cache"])
        write_results(path, document)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=DEFAULT_CHILDREN)
    parser.add_argument("--loads", type=int, default=DEFAULT_LOADS, help="loads per process")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "process_spread.json")
    parser.add_argument(
        "--malloc-hugetlb",
        action="store_true",
        help=f"start the children with GLIBC_TUNABLES={MALLOC_HUGETLB_TUNABLE} (see above)",
    )
    parser.add_argument(
        "--summarize",
        type=Path,
        nargs="+",
        help="add the near-cache summary to these result files (this host's L2) and stop",
    )
    args = parser.parse_args(argv)
    if args.malloc_hugetlb:
        os.environ["GLIBC_TUNABLES"] = MALLOC_HUGETLB_TUNABLE
    settings = get_settings()
    l2_bytes = l2_cache_bytes(measurement_core(settings))
    if l2_bytes is None:
        parser.error("this host's L2 size is unknown (sysfs): no band to summarize over")
    if args.summarize:
        summarize(args.summarize, l2_bytes, settings.near_cache_band)
        return 0
    reserve_measurement_core(settings)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    models = [build_op_model(op_type, config) for op_type, config in DEFAULT_CONFIGS]
    # timings[config][child][load] = the load's back-to-back timings (ms).
    timings: list[list[list[list[float]]]] = [[] for _ in DEFAULT_CONFIGS]
    huge_pages_kb: list[int | None] = []
    for _ in range(args.children):
        with MeasurementChild(settings) as child:
            runs: list[list[list[float]]] = [[] for _ in DEFAULT_CONFIGS]
            for _load in range(args.loads):
                for i, model in enumerate(models):  # the next model evicts this one's load
                    runs[i].append([child.measure(model).median_ms for _ in range(2)])
            huge_pages_kb.append(anon_huge_pages_kb(child.pid))
        for i, loads in enumerate(runs):
            timings[i].append(loads)
    rows = []
    print(f"{'op type':<17}{'configuration':<44}{'weights MB':>11}{'median ms':>10}"
          f"{'same load':>10}{'reload':>8}{'across':>8}{'best of loads':>14}")  # fmt: skip
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
              f"{row['same_load']:>10.1%}{row['reload']:>8.1%}{row['across']:>8.1%}"
              f"{row['best_of_loads']:>14.1%}")  # fmt: skip
    print(
        "same load: |first / second - 1| of back-to-back timings (mean); reload: the same "
        "between two loads in one process; across: max / min - 1 of the processes' first load; "
        "best of loads: of their fastest load"
    )
    summary = near_cache_summary(rows, l2_bytes, settings.near_cache_band)
    print_summary(summary)
    print(f"children's AnonHugePages (kB): {huge_pages_kb}")
    write_results(
        args.out,
        {
            "children": args.children,
            "loads": args.loads,
            "malloc_hugetlb": args.malloc_hugetlb,
            "anon_huge_pages_kb": huge_pages_kb,
            "near_cache": summary,
            "configs": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
