"""What a training batch looks like, told to the norm layers before each training forward."""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch


class TaskRows(NamedTuple):
    one_hot: torch.Tensor   # [N, n_tasks] in the requested dtype: row i belongs to task k
    counts: torch.Tensor    # [n_tasks] rows per task, same dtype
    seen: torch.Tensor      # [n_tasks] bool: task k <= the task being learnt


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

    def task_rows(self, n_tasks: int, dtype: torch.dtype) -> TaskRows:
        """Which rows belong to which task: made once per forward and shared by every layer that
        reads it (AdaB2N's 20 layers would otherwise make it 20 times)."""
        cache = self.__dict__.setdefault("_task_rows", {})   # frozen: the cache is not a field
        key = (n_tasks, dtype)
        if key not in cache:
            tasks = torch.arange(n_tasks, device=self.task_ids.device)
            one_hot = (self.task_ids[:, None] == tasks).to(dtype)
            cache[key] = TaskRows(one_hot, one_hot.sum(0), tasks <= self.task)
        return cache[key]
