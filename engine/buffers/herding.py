"""Herding exemplar memory (iCaRL, as FACIL/TBBN select it): the offline protocol's memory.

After each task the memory is rebuilt from the candidates (the task's training rows, then the
stored exemplars of the old classes, FACIL's order): every seen class keeps
`ceil(size / n_seen_classes)` exemplars (even split, rounded up as FACIL's
`exemplars_selection.py:45`, so the memory may hold a few more than `size`: 67 x 30 = 2010 of
2000; iCaRL's m = K / t rounds down, not offered), chosen greedily so that the mean of the chosen L2-normalised features tracks the class mean.
Old classes are re-selected among their stored exemplars with the current model (FACIL), which
for a herding order computed once reduces to keeping a prefix (iCaRL's ReduceExemplarSet).

The method computes the features (the model in eval mode on un-augmented rows); this module
selects and stores. Between selections the memory is fixed: it takes no per-step `add`.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from engine.buffers import REGISTRY
from engine.buffers.base import Buffer


@torch.no_grad()
def per_class_slots(size: int, n_classes: int) -> int:
    """Exemplars each seen class keeps: ceil(size / classes), as FACIL (may overshoot `size`)."""
    return -(-size // n_classes)


def herding_select(features: torch.Tensor, labels: torch.Tensor, n_classes: int, per_class: int) -> torch.Tensor:
    """Indices into the candidates: class by class (ascending), each class's exemplars in greedy order.

    Step k picks, in every class at once, the unpicked row f minimising
    ||mu - (f + sum of picked) / (k + 1)|| with mu the mean of the class's normalised features;
    ties go to the earliest candidate (FACIL's strict `<`). A class with fewer candidates than
    `per_class` keeps them all. The loop over k is inherent; classes and rows are vectorised.
    """
    feats = F.normalize(features.float(), dim=1)
    device, dim = feats.device, feats.shape[1]
    counts = torch.bincount(labels, minlength=n_classes)
    order = torch.argsort(labels, stable=True)               # class-major, candidate order inside a class
    starts = counts.cumsum(0) - counts
    rank = torch.arange(labels.numel(), device=device) - starts[labels[order]]
    n_max = int(counts.max()) if labels.numel() else 0       # one host sync per selection
    steps = min(per_class, n_max)
    if steps == 0:
        return torch.empty(0, dtype=torch.long, device=device)
    padded = feats.new_zeros(n_classes, n_max, dim)
    padded[labels[order], rank] = feats[order]
    taken = torch.arange(n_max, device=device)[None, :] >= counts[:, None]   # padding is never picked
    mean = padded.sum(1) / counts.clamp_min(1)[:, None]
    picked_sum = torch.zeros_like(mean)
    picks = torch.empty(steps, n_classes, dtype=torch.long, device=device)
    every = torch.arange(n_classes, device=device)
    for k in range(steps):
        dist = (mean[:, None, :] - (picked_sum[:, None, :] + padded) / (k + 1)).norm(dim=2)
        j = dist.masked_fill(taken, float("inf")).argmin(1)
        picks[k] = j
        picked_sum += padded[every, j]
        taken[every, j] = True
    keep = torch.arange(steps, device=device)[None, :] < counts.clamp(max=per_class)[:, None]   # [C, steps]
    return order[(starts[:, None] + picks.T)[keep]]


@REGISTRY.register("herding")
class HerdingBuffer(Buffer):
    selects_at_task_end = True

    def __init__(self, size: int, n_tasks: int, device: torch.device):
        super().__init__(size, n_tasks, device)
        self.count = 0                      # stored exemplars: slots [0, count)

    def _slots(self, n: int, task: int) -> torch.Tensor:
        raise TypeError("the herding memory is rebuilt at task end by select(); it takes no per-step add")

    def _filled_slots(self) -> torch.Tensor:
        return torch.arange(self.count, device=self.device)

    @torch.no_grad()
    def select(self, candidates: dict[str, torch.Tensor], features: torch.Tensor, n_classes: int) -> None:
        """Rebuild the memory from `candidates` (fields of equal length, "y" = labels in
        [0, n_classes)) and their features; every seen class gets `ceil(size / n_classes)` slots."""
        pick = herding_select(features, candidates["y"], n_classes, per_class_slots(self.size, n_classes))
        n = int(pick.numel())
        if not self.data or n > self.data["y"].shape[0]:   # rounding up may overshoot `size`
            # the candidates hold every stored row, so the old storage can be dropped
            self.data = {k: torch.zeros((max(self.size, n), *v.shape[1:]), dtype=v.dtype, device=self.device)
                         for k, v in candidates.items()}
        for key, value in candidates.items():
            self.data[key][:n] = value[pick].to(self.device)
        self.seen += int(candidates["y"].shape[0])
        self.count = n
        self._filled = self._filled_slots()

    def _extra_state(self) -> dict[str, Any]:
        return {"count": self.count}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.count = state["count"]
