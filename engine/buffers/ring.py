"""Ring buffer: `size // n_tasks` slots per task, each task writing FIFO into its own portion.

Official quirk (mammoth): sampling assumes filled slots form a prefix of the buffer; here only
filled slots are ever sampled.
"""
from __future__ import annotations

from typing import Any

import torch

from engine.buffers import REGISTRY
from engine.buffers.base import Buffer, last_writer_wins


@REGISTRY.register("ring")
class RingBuffer(Buffer):
    def __init__(self, size: int, n_tasks: int, device: torch.device):
        super().__init__(size, n_tasks, device)
        self.portion = size // n_tasks
        self.written = [0] * n_tasks          # items written per task (host-side: no syncs)

    def _slots(self, n: int, task: int) -> torch.Tensor:
        slots = task * self.portion + (self.written[task] + torch.arange(n, device=self.device)) % self.portion
        self.written[task] += n
        return last_writer_wins(slots, self.size)

    def _filled_slots(self) -> torch.Tensor:
        return torch.cat([t * self.portion + torch.arange(min(w, self.portion), device=self.device)
                          for t, w in enumerate(self.written)])

    def _extra_state(self) -> dict[str, Any]:
        return {"written": list(self.written)}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        self.written = list(state["written"])
