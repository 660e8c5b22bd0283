"""What a training batch looks like, told to the norm layers before each training forward."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BatchLayout:
    """Rows are `[current | memory]`: the first `n_current` rows come from the task being learnt.

    task_ids: LongTensor[N] on the batch's device, the task of every row (current rows = task).
    task: index of the task being learnt (0-based).
    """
    n_current: int
    task_ids: torch.Tensor
    task: int

    @property
    def n_memory(self) -> int:
        return int(self.task_ids.shape[0]) - self.n_current
