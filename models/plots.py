"""PNG plots of a device's time model (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from models.timemodel import DeviceTimeModel, sample_latency_ms

# A channel sweep needs this many distinct cout values with everything else equal.
_MIN_SWEEP_POINTS = 8
_SWEEP_KEYS = ("h", "w", "cin", "kh", "kw", "stride", "padding", "activation")


def _largest_sweep(conv: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for s in conv:
        config = s["config"]
        key = tuple(config.get(k) for k in _SWEEP_KEYS)
        groups.setdefault(key, []).append(s)
    best = max(groups.values(), key=lambda g: len({s["config"]["cout"] for s in g}), default=[])
    return best if len({s["config"]["cout"] for s in best}) >= _MIN_SWEEP_POINTS else []


def conv_channel_plot_png(
    samples: Sequence[Mapping[str, Any]],
    model: DeviceTimeModel | None,
    *,
    title: str = "conv2d latency across output channels",
) -> bytes:
    """PNG bytes: measured vs predicted conv2d latency (ms, including one invoke overhead).

    Uses the largest channel sweep among the samples (same h, w, cin, kernel, stride, padding,
    activation; varying cout). Without one, plots measured against predicted for every conv2d
    sample.
    """
    conv = [s for s in samples if s.get("op_type") == "conv2d"]
    sweep = _largest_sweep(conv)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        if sweep:
            sweep = sorted(sweep, key=lambda s: s["config"]["cout"])
            couts = [s["config"]["cout"] for s in sweep]
            ax.plot(couts, [sample_latency_ms(s) for s in sweep], "o", ms=3, label="measured")
            if model is not None:
                base = dict(sweep[0]["config"])
                grid = list(range(min(couts), max(couts) + 1))
                predicted = [
                    model.predict_op("conv2d", {**base, "cout": c})[0] + model.overhead_ms
                    for c in grid
                ]
                ax.step(grid, predicted, where="mid", label=f"predicted ({model.variant} tree)")
            c = sweep[0]["config"]
            ax.set_xlabel("output channels (cout)")
            ax.set_title(
                f"{title}\n{c['h']}x{c['w']}x{c['cin']}, {c['kh']}x{c['kw']} kernel, "
                f"stride {c['stride']}, {c['padding']}"
            )
        else:
            measured = [sample_latency_ms(s) for s in conv]
            if model is not None and conv:
                predicted = [
                    model.predict_op("conv2d", s["config"])[0] + model.overhead_ms for s in conv
                ]
                ax.loglog(measured, predicted, "o", ms=3, alpha=0.6, label="conv2d samples")
                low, high = min(measured + predicted), max(measured + predicted)
                ax.loglog([low, high], [low, high], "k--", lw=1, label="y = x")
            ax.set_xlabel("measured latency (ms)")
            ax.set_title(f"{title} (no channel sweep: measured vs predicted)")
        ax.set_ylabel("latency (ms)" if sweep else "predicted latency (ms)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(fig)
