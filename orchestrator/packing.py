"""How many trials share a GPU by default: as many as fit under --usage_threshold of its memory.

run.py kept starting trials on a GPU while it was under 30% memory; we do the same ahead of time,
from an estimate of each trial's peak memory (engine/memory.py), so no trial has to be started
to find out. Every distinct build (dataset, options, network, layer, method, batch, buffer) is
estimated once. A trial's GPU share is 1/k, where k trials of its build fit in threshold x the
memory of the smallest GPU: Ray's accounting then never lets the trials on one GPU add up to
more than that budget, whatever builds they mix. --gpus_per_trial overrides.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from orchestrator.gpus import GpuStatus
from orchestrator.sweep import PlannedTrial

# The config fields a trial's memory depends on (not the seed, not the training schedule).
MEMORY_FIELDS = ("dataset", "data_args", "backbone", "norm", "method", "setting", "bs", "minibatch_size",
                 "buffer_size", "n_tasks")


@dataclass
class Packing:
    shares: dict[str, float] = field(default_factory=dict)   # trial id -> its GPU share
    lines: list[str] = field(default_factory=list)           # the plan, as the terminal shows it


def share_of(per_gpu: int) -> float:
    """1/per_gpu, rounded down to Ray's resource precision (1e-4) so that per_gpu of them fit."""
    return math.floor(1e4 / per_gpu) / 1e4


def pack(trials: Iterable[PlannedTrial], gpus: list[GpuStatus], threshold: float) -> Packing:
    from engine.memory import gib

    if not gpus:
        return Packing()
    budget = threshold * min(g.memory_total for g in gpus)
    estimates: dict[str, tuple[int, str, str]] = {}   # build key -> (trials per GPU, what, estimate)
    out = Packing()
    counts: dict[str, int] = {}
    for t in trials:
        key = repr([getattr(t.config, f) for f in MEMORY_FIELDS])
        if key not in estimates:
            estimates[key] = _per_gpu(t, budget)
        out.shares[t.trial_id] = share_of(estimates[key][0])
        counts[key] = counts.get(key, 0) + 1
    where = f"under {threshold:.0%} of {gib(min(g.memory_total for g in gpus))} (the smallest GPU's memory)"
    builds = sorted(estimates.items(), key=lambda kv: kv[1][0])
    for key, (per_gpu, what, est) in builds[:8]:
        out.lines.append(f"  {per_gpu} trials per GPU: {what} ({counts[key]} trials), each about {est}")
    if len(builds) > 8:
        out.lines.append(f"  ... and {len(builds) - 8} more builds")
    out.lines.insert(0, f"GPU packing by estimated peak memory, {where}; --gpus_per_trial overrides:")
    return out


def _per_gpu(trial: PlannedTrial, budget: float) -> tuple[int, str, str]:
    from engine.memory import estimate

    est = estimate(trial.config)
    c = trial.config
    over = " (more than the budget: 1 per GPU)" if est.total > budget else ""
    return max(1, int(budget // est.total)), f"{c.dataset} {c.method} {c.norm} bs {c.bs} buffer {c.buffer_size}", est.describe() + over


def plan_lines(trials: list[PlannedTrial], reading, threshold: float, gpus_per_trial: float | None) -> list[str]:
    """What --dry_run says of the GPUs: how many trials per GPU, on which idle GPUs, which are
    held back. `reading`: an NVML probe (gpus.Probe) of the GPUs the user allows."""
    from orchestrator.gpus import busy_why

    if gpus_per_trial == 0:
        return ["GPU plan: none (--gpus_per_trial 0): trials run on CPUs"]
    if not reading.gpus:
        return [f"GPU plan: no GPU ({reading.why_none}): trials run on CPUs"]
    held = [(g, busy_why(g, threshold)) for g in reading.gpus]
    idle = [g for g, why in held if why is None]
    lines = []
    if gpus_per_trial is None:
        packed = pack(trials, reading.gpus, threshold)
        counts = sorted({round(1 / s) for s in packed.shares.values()} or {1})
        per = f"{counts[0]}" if len(counts) == 1 else f"{counts[0]} to {counts[-1]}"
        lines += packed.lines
    else:
        per = f"{max(1, int(1 / gpus_per_trial + 1e-9))}" if gpus_per_trial <= 1 else f"1 (on {gpus_per_trial:g} GPUs)"
    names = ", ".join(g.label for g in idle)
    lines.insert(0, f"GPU plan: {per} trials per GPU" + (f" (--gpus_per_trial {gpus_per_trial:g})" if gpus_per_trial else "")
                 + f" on {len(idle)} idle GPU{'s' * (len(idle) != 1)}" + (f" ({names})" if idle else ""))
    lines += [f"  {g.label} ({g.uuid}) held back while {why}" for g, why in held if why]
    return lines
