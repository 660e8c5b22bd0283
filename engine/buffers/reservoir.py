"""Reservoir sampling (Vitter's algorithm R), batched.

Item number s (0-based over the whole stream) goes to slot s while s < size, else to a uniform
slot j in [0, s], kept only if j < size: every item is in the buffer with probability
size / (s + 1). A batch draws every item's j at once; ties go to the later item, exactly as
sequential insertion would resolve them.
"""
from __future__ import annotations

import torch

from engine.buffers import REGISTRY
from engine.buffers.base import Buffer, last_writer_wins


@REGISTRY.register("reservoir")
class ReservoirBuffer(Buffer):
    def _slots(self, n: int, task: int) -> torch.Tensor:
        position = self.seen + torch.arange(n, device=self.device)
        draw = (torch.rand(n, device=self.device, dtype=torch.float64) * (position + 1)).long()
        slots = torch.where(position < self.size, position, draw).clamp_(max=self.size)  # j >= size: dropped
        return last_writer_wins(slots, self.size)

    def _filled_slots(self) -> torch.Tensor:
        return torch.arange(min(self.seen, self.size), device=self.device)
