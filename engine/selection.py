"""Offline selection "val" (FACIL): a held-out split of each task and the best epoch on it."""
from __future__ import annotations

import math

import torch

from engine.datasets import ContinualDataset
from engine.device import eval_chunk
from engine.methods.base import Method
from engine.sampling import class_balanced_pick

VAL_FRACTION = 0.1   # per-class share of the task's training rows held out (FACIL)


def validation_split(y: torch.Tensor, seed: int, task: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train rows, validation rows): round(10%) of every class, at random (FACIL's get_data;
    np.round and torch.round both round half to even). A generator of its own, seeded by trial
    seed and task, keeps the split independent of the training RNG (and of resumes)."""
    counts = torch.bincount(y.cpu())
    n_val = torch.round(counts.double() * VAL_FRACTION).long()
    g = torch.Generator().manual_seed(1_000_003 * (seed + 1) + task)
    val_rows = class_balanced_pick(y.cpu(), n_val, g).to(y.device)
    train_mask = torch.ones(y.shape[0], dtype=torch.bool, device=y.device)
    train_mask[val_rows] = False
    return train_mask.nonzero().squeeze(1), val_rows


@torch.no_grad()
def validation_loss(method: Method, dataset: ContinualDataset, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean validation loss, in eval mode, without augmentation (FACIL's eval on val_loader)."""
    method.net.eval()
    chunk = eval_chunk(dataset.device, dataset.input_shape)
    total = sum(method.validation_loss(dataset.normalize(xs), ys) for xs, ys in zip(x.split(chunk), y.split(chunk)))
    method.net.train()
    return total / y.shape[0]


class BestEpoch:
    """The lowest-validation-loss epoch of a stage and a copy of the network then (on its device)."""

    def __init__(self) -> None:
        self.loss = math.inf
        self.epoch: int | None = None
        self.state: dict[str, torch.Tensor] | None = None

    def update(self, loss: torch.Tensor, epoch: int, net: torch.nn.Module) -> float:
        value = float(loss)   # one host sync per epoch
        if value < self.loss:  # strict: the earliest best epoch wins; NaN never does
            self.loss, self.epoch = value, epoch
            self.state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        return value

    def restore(self, net: torch.nn.Module) -> None:
        if self.state is not None:
            net.load_state_dict(self.state)
