"""Replay-buffer storage shared by every policy: preallocated tensors on the trial's device.

A policy only decides *which slot* each incoming item goes to (`_slots`); storage, sampling
and checkpointing live here. Items are stored un-augmented (uint8 images stay uint8), with
whatever fields the method stores (labels, task ids, logits...).

An add never waits for the device: an item the policy drops is written to a spare row past the
last slot (`size`) instead of being filtered out by a boolean mask, whose result size the host
would have to read back (a sync per step on a GPU).
"""
from __future__ import annotations

from typing import Any

import torch


class Buffer:
    def __init__(self, size: int, n_tasks: int, device: torch.device):
        self.size = size
        self.n_tasks = n_tasks
        self.device = device
        self.seen = 0                       # items offered so far (the stream position)
        self.data: dict[str, torch.Tensor] = {}
        self._filled = torch.empty(0, dtype=torch.long, device=device)  # slot indices holding data

    # ---- policy -------------------------------------------------------------------------
    def _slots(self, n: int, task: int) -> torch.Tensor:
        """For n incoming items, the slot each is written to: `size` (the spare row) for an item
        not kept; a slot appears at most once (later items win ties: `last_writer_wins`)."""
        raise NotImplementedError

    def _filled_slots(self) -> torch.Tensor:
        raise NotImplementedError

    # ---- storage ------------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._filled.numel())

    def is_empty(self) -> bool:
        return len(self) == 0

    @torch.no_grad()
    def add(self, task: int, /, **fields: torch.Tensor) -> None:
        n = next(iter(fields.values())).shape[0]
        if not self.data:
            self.data = {k: torch.zeros((self.size + 1, *v.shape[1:]), dtype=v.dtype, device=self.device)
                         for k, v in fields.items()}
        elif next(iter(self.data.values())).shape[0] == self.size:   # a checkpoint without the spare row
            self.data = {k: torch.cat([v, v[:1]]) for k, v in self.data.items()}
        slots = self._slots(n, task)
        for key, value in fields.items():
            self.data[key][slots] = value.to(self.device)
        self.seen += n
        self._filled = self._filled_slots()

    @torch.no_grad()
    def sample(self, n: int) -> dict[str, torch.Tensor]:
        """`min(n, len)` distinct stored items, uniformly at random (mammoth's get_data)."""
        pick = self._filled[torch.randperm(len(self), device=self.device)[:n]]
        return {k: v[pick] for k, v in self.data.items()}

    def all(self) -> dict[str, torch.Tensor]:
        return {k: v[self._filled] for k, v in self.data.items()}

    # ---- checkpointing ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"seen": self.seen, "data": dict(self.data), **self._extra_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.seen = state["seen"]
        self.data = {k: v.to(self.device) for k, v in state["data"].items()}
        self._load_extra_state(state)
        self._filled = self._filled_slots() if self.data else self._filled

    def _extra_state(self) -> dict[str, Any]:
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        pass


def last_writer_wins(slots: torch.Tensor, size: int) -> torch.Tensor:
    """For every slot written more than once in a batch, only the latest item keeps it (the
    sequential rule's outcome); the others go to the spare row `size`, so one vectorized write
    equals item-by-item insertion. `slots` may already hold `size` for dropped items."""
    items = torch.arange(slots.numel(), device=slots.device)
    winner = torch.full((size + 1,), -1, dtype=items.dtype, device=items.device)
    winner.scatter_reduce_(0, slots, items, reduce="amax")
    return torch.where(winner[slots] == items, slots, size)
