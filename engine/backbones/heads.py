"""Classifier heads of the offline (FACIL/TBBN) protocol: one block of class weights per task.

FACIL grows one head per task and optimises only the heads that exist (LUCIR: only the newest),
so a class's weights are untouched (no weight decay either) until its task starts. Keeping one
parameter block per task reproduces that while the network still outputs logits over all
classes in label order, as every engine method and the evaluation expect.

- TaskLinear: a Linear block per task (FACIL's LLL_Net heads).
- CosineLinear: LUCIR's cosine classifier `sigma * cos(f, w)` with one learnable sigma shared by
  all blocks (Hou et al. 2019, Eq. 4; FACIL's CosineLinear: weights U(-1/sqrt(d), 1/sqrt(d)), sigma 1).
"""
from __future__ import annotations

import math
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn


class TaskLinear(nn.Module):
    def __init__(self, in_features: int, task_sizes: Sequence[int]):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(in_features, n) for n in task_sizes)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([block(features) for block in self.blocks], dim=1)

    def task_parameters(self, tasks: Iterable[int]) -> list[nn.Parameter]:
        return [p for t in tasks for p in self.blocks[t].parameters()]

    def shared_parameters(self) -> list[nn.Parameter]:
        return []


class CosineLinear(nn.Module):
    def __init__(self, in_features: int, task_sizes: Sequence[int]):
        super().__init__()
        bound = 1.0 / math.sqrt(in_features)
        self.weights = nn.ParameterList(nn.Parameter(torch.empty(n, in_features).uniform_(-bound, bound))
                                        for n in task_sizes)
        self.sigma = nn.Parameter(torch.ones(1))

    def cosine(self, features: torch.Tensor) -> torch.Tensor:
        """cos(f, w) for every class, in [-1, 1] (LUCIR's scores "without sigma")."""
        weight = torch.cat(list(self.weights), dim=0)
        return F.linear(F.normalize(features, p=2, dim=1), F.normalize(weight, p=2, dim=1))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.sigma * self.cosine(features)

    def task_parameters(self, tasks: Iterable[int]) -> list[nn.Parameter]:
        return [self.weights[t] for t in tasks]

    def shared_parameters(self) -> list[nn.Parameter]:
        return [self.sigma]
