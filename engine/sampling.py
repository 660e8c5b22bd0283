"""Class-balanced row selection: FACIL's validation split and EEIL's balanced finetuning."""
from __future__ import annotations

import torch


def class_balanced_pick(y: torch.Tensor, n_take: torch.Tensor,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Indices of a random subset holding `n_take[c]` rows of every label c (all rows when fewer),
    ascending. Vectorised: one random key per row, ranked within its label."""
    device = y.device
    keys = torch.rand(y.shape[0], generator=generator, device=generator.device if generator else device).to(device)
    order = torch.argsort(keys)
    order = order[torch.argsort(y[order], stable=True)]               # by label, random inside a label
    counts = torch.bincount(y, minlength=n_take.shape[0])
    starts = counts.cumsum(0) - counts
    labels = y[order]
    rank = torch.arange(y.shape[0], device=device) - starts[labels]
    return order[rank < n_take.to(device)[labels]].sort().values
