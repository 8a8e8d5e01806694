"""Campaign planner: split a sample budget across op types, draw configurations, chunk into jobs.

Pure functions (no database): the service turns the plan into rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from models.opspace import (
    chain_layers,
    channel_sweep_configs,
    default_campaign,
    sample_configs,
    validate_config,
)

OVERHEAD_OP_TYPE = "invoke_overhead"
# Every campaign measures the fixed cost of one invoke() a few times: the network prediction adds
# it once per network, so each device model needs it even when the user asked for conv2d only.
MIN_OVERHEAD_SAMPLES = 10
CHAIN_OP_TYPE = "conv_chain"
# A campaign that draws conv_chain probes draws at least this many. Two numbers rest on them:
# the reload rate needs models.timemodel.MIN_RELOAD_PROBES (3) beyond the cache knee (11 of 31 in
# the 2026-11-29 10:06 campaign, knee 6.8 MB), and the network extra curve needs
# models.timemodel.MIN_CHAIN_EXTRA_PROBES (10) quiet ones within it. With 16 the 800-sample
# `make demo` of 2026-11-30 20:07 drew 17 and had 9 quiet ones within its 15.5 MB knee: no curve.
# Probes are drawn log-uniform over 0.5-32 MB (models.opspace), so a knee at 6.8 MB holds 63% of
# them; with a fifth lost as disturbed, 32 probes give at least 10 within it with probability
# 0.99 (binomial; 0.23 with 16, 0.85 with 24). The 16 more and their layers cost the demo ~40
# samples. The default campaign draws ~64 and is not affected.
MIN_CHAIN_PROBES = 32
# A campaign that profiles conv2d with at least this budget also sweeps output channels densely
# (8..128, step 1) on the DESIGN.md evidence layer: the sweep shows where time steps with width,
# which the conv rules and the plot must show. Smaller budgets sweep every 4th width.
DENSE_SWEEP_MIN_SAMPLES = 600
COARSE_SWEEP_MIN_SAMPLES = 200
COARSE_SWEEP_STEP = 4


def conv_sweep(op_types: Sequence[str], samples: int) -> list[dict[str, Any]]:
    """The conv2d output-channel sweep that a campaign of this size carries (maybe none)."""
    if "conv2d" not in op_types or samples < COARSE_SWEEP_MIN_SAMPLES:
        return []
    step = 1 if samples >= DENSE_SWEEP_MIN_SAMPLES else COARSE_SWEEP_STEP
    return channel_sweep_configs("conv2d", step=step)


@dataclass(frozen=True)
class CampaignPlan:
    """Samples per op type and the jobs' configuration lists (``[{index, op_type, config}]``)."""

    counts: dict[str, int]
    jobs: list[list[dict[str, Any]]]

    @property
    def total_samples(self) -> int:
        return sum(len(job) for job in self.jobs)


def plan_campaign(
    op_types: Sequence[str],
    samples: int,
    seed: int,
    job_size: int,
    extra_configs: Sequence[tuple[str, dict[str, Any]]] = (),
) -> CampaignPlan:
    """Plan a campaign of about ``samples`` op configurations of ``op_types`` on one device.

    The budget is split with :func:`models.opspace.default_campaign`; ``invoke_overhead`` gets at
    least :data:`MIN_OVERHEAD_SAMPLES` and ``conv_chain``, when asked for, at least
    :data:`MIN_CHAIN_PROBES` (added to the budget where the split gave fewer). The
    configurations are shuffled with ``seed`` so that every job mixes op types: a fit made in the
    middle of a campaign already sees all of them. ``extra_configs`` (validated by the caller)
    are measured too.
    """
    sweep = conv_sweep(op_types, samples)
    counts = default_campaign(samples - len(sweep), list(op_types)) if samples else {}
    counts[OVERHEAD_OP_TYPE] = max(counts.get(OVERHEAD_OP_TYPE, 0), MIN_OVERHEAD_SAMPLES)
    if CHAIN_OP_TYPE in op_types and samples:
        counts[CHAIN_OP_TYPE] = max(counts.get(CHAIN_OP_TYPE, 0), MIN_CHAIN_PROBES)
    counts = {op_type: n for op_type, n in counts.items() if n > 0}
    drawn: list[tuple[str, dict[str, Any]]] = []
    for op_type, n in counts.items():
        drawn.extend((op_type, config) for config in sample_configs(op_type, n, seed))
    drawn.extend(("conv2d", config) for config in sweep)
    if sweep:
        counts["conv2d"] = counts.get("conv2d", 0) + len(sweep)
    random.Random(seed).shuffle(drawn)
    before = len(drawn)
    drawn = with_probe_layers(drawn)
    if len(drawn) > before:
        counts["conv2d"] = counts.get("conv2d", 0) + len(drawn) - before
    drawn.extend(extra_configs)
    for op_type, _config in extra_configs:
        counts[op_type] = counts.get(op_type, 0) + 1
    return CampaignPlan(counts=counts, jobs=chunk_jobs(drawn, job_size))


def with_probe_layers(
    drawn: Sequence[tuple[str, dict[str, Any]]],
) -> list[tuple[str, dict[str, Any]]]:
    """``drawn`` with each ``conv_chain`` probe followed by its distinct layers as conv2d samples.

    The fitter prices a probe's reload as its measured time minus its layers' time alone
    (models.timemodel.estimate_reload_rate); measured right after the probe, those layers give
    that time without the trees' error on them or the host's drift in between. One or two per
    probe (a chain alternates c -> m and m -> c), ~60 conv2d samples in a default campaign.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    for op_type, config in drawn:
        out.append((op_type, config))
        if op_type != CHAIN_OP_TYPE:
            continue
        seen: list[dict[str, Any]] = []
        for layer in chain_layers(config):
            if layer not in seen:
                seen.append(layer)
                out.append(("conv2d", validate_config("conv2d", layer)))
    return out


def chunk_jobs(
    drawn: Sequence[tuple[str, dict[str, Any]]], job_size: int
) -> list[list[dict[str, Any]]]:
    """``(op_type, config)`` pairs cut into jobs of at most ``job_size``, indexed from 0 in each."""
    jobs: list[list[dict[str, Any]]] = []
    for start in range(0, len(drawn), job_size):
        chunk = drawn[start : start + job_size]
        jobs.append(
            [
                {"index": index, "op_type": op_type, "config": config}
                for index, (op_type, config) in enumerate(chunk)
            ]
        )
    return jobs


def adaptive_budget(
    samples: int, requested: int | None, fraction: float, min_campaign_samples: int
) -> int:
    """Samples of a campaign of ``samples`` kept for its adaptive round.

    ``requested`` (the body's ``adaptive_samples``) wins when given; otherwise ``fraction`` of
    the samples, and none below ``min_campaign_samples`` (too few per op type to rank errors).
    """
    if requested is not None:
        return min(requested, samples)
    if samples < min_campaign_samples:
        return 0
    return round(samples * fraction)


def split_adaptive_budget(weights: dict[str, float], budget: int) -> dict[str, int]:
    """``budget`` samples split across op types in proportion to ``weights`` (largest remainder,
    so the counts add up to the budget exactly); op types of zero weight get none."""
    positive = {op_type: w for op_type, w in weights.items() if w > 0}
    total = sum(positive.values())
    if budget <= 0 or total <= 0:
        return {}
    exact = {op_type: budget * w / total for op_type, w in positive.items()}
    counts = {op_type: int(x) for op_type, x in exact.items()}
    left = budget - sum(counts.values())
    for op_type in sorted(exact, key=lambda t: (counts[t] - exact[t], t))[:left]:
        counts[op_type] += 1
    return {op_type: n for op_type, n in counts.items() if n > 0}


def round_device_s(
    max_device_s: float | None, first_samples: int, adaptive_samples: int, adapted: bool
) -> float | None:
    """Device time (s) a campaign's current round may use, counted from the campaign's start.

    Before its adaptive round is planned, the first round gets its share of the budget by
    samples (``first_samples`` of ``first_samples + adaptive_samples``; the adaptive round keeps
    the rest, as it keeps its samples); after, the whole budget. None: no budget.
    """
    if max_device_s is None:
        return None
    if adaptive_samples > 0 and not adapted:
        return max_device_s * first_samples / (first_samples + adaptive_samples)
    return max_device_s
