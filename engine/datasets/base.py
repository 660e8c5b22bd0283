"""A continual dataset: raw arrays from a loader, split into tasks by a seeded class order.

Every family provides a `DatasetSpec` whose `load(root, options)` returns `RawData` (uint8
NCHW tensors on the CPU, integer labels). `build_dataset` then remaps labels by the class order
of algorithms.md §1 (seed 0: natural; seed s > 0: permutation from a generator seeded 42 + s),
cuts the tasks and moves everything to the trial's device once. Batches are then cut by indexing.
On a GPU, images larger than HOST_IMAGES_BYTES in all (ImageNet-100 at 224 px: ~19 GiB) stay on the
host, pinned: a shared GPU keeps room for other trials, and the trainer moves one task's training
images to the device while it trains on them, and the test images chunk by chunk (normalize).
Labels always live on the device.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from engine.datasets.augment import random_crop, random_hflip
from engine.datasets.download import Archive
from engine.errors import ConfigError
from engine.options import Option


@dataclass
class RawData:
    x_train: torch.Tensor   # uint8 [N, C, H, W]
    y_train: torch.Tensor   # int64 [N], original class ids 0..n_classes-1
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int


HOST_IMAGES_BYTES = 4 << 30


def images_on_host(n_bytes: int, device: torch.device) -> bool:
    """Whether a dataset's uint8 images of `n_bytes` stay on the host for a trial on `device`."""
    return device.type == "cuda" and n_bytes > HOST_IMAGES_BYTES


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    load: Callable[[Path, Mapping[str, Any]], RawData]
    n_tasks: int                          # the standard split
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 0
    flip: bool = False
    default_backbone: str = "resnet18"
    options: Mapping[str, Option] = field(default_factory=dict)
    source: str = ""                      # where the data comes from / how to get it (for --help, errors)
    # (n_classes, (C, H, W)) the data will have, from the options alone: the launcher's pre-flight
    # builds every network from it without loading anything
    geometry: Callable[[Mapping[str, Any]], tuple[int, tuple[int, int, int]]] | None = None
    # (train, test) images the data will have, from the options alone: the launcher's GPU
    # memory estimate (engine/memory.py)
    rows: Callable[[Mapping[str, Any]], tuple[int, int]] | None = None
    archive: Archive | None = None        # downloadable: fetched when missing (engine/datasets/download.py)
    # a cheap check that the data under root are there and readable (the launcher's data stage);
    # None: loading them is cheap enough to be the check
    check: Callable[[Path, Mapping[str, Any]], None] | None = None


def fixed(n_classes: int, shape: tuple[int, int, int]) -> Callable[[Mapping[str, Any]], tuple]:
    """The geometry of a family whose shape does not depend on its options."""
    return lambda options: (n_classes, shape)


@dataclass
class Task:
    index: int
    classes: torch.Tensor    # remapped labels of this task, ascending
    x_train: torch.Tensor    # uint8 [N, C, H, W] on device
    y_train: torch.Tensor    # int64 [N] remapped labels, on device
    x_test: torch.Tensor
    y_test: torch.Tensor


class ContinualDataset:
    def __init__(self, spec: DatasetSpec, raw: RawData, *, n_tasks: int, seed: int,
                 device: torch.device, nc_first_task: int | None = None):
        self.spec = spec
        self.name = spec.name
        self.n_classes = raw.n_classes
        self.n_tasks = n_tasks
        self.device = device
        self.input_shape = tuple(raw.x_train.shape[1:])
        self.task_sizes = split_classes(raw.n_classes, n_tasks, nc_first_task)
        self.class_order = class_order(raw.n_classes, seed)
        remap = torch.empty(raw.n_classes, dtype=torch.long)
        remap[self.class_order] = torch.arange(raw.n_classes)
        bounds = torch.tensor([0, *self.task_sizes]).cumsum(0)
        # label -> task lookup table: labels are remapped, so task k owns [bounds[k], bounds[k+1])
        self.label_task = torch.repeat_interleave(torch.arange(n_tasks), torch.tensor(self.task_sizes)).to(device)
        self.task_offsets = bounds.tolist()
        y_train, y_test = remap[raw.y_train], remap[raw.y_test]
        on_host = images_on_host(raw.x_train.numel() + raw.x_test.numel(), device)

        def images(x: torch.Tensor) -> torch.Tensor:
            return x.pin_memory() if on_host else x.to(device)   # pinned: copies overlap compute

        self.tasks: list[Task] = []
        for k in range(n_tasks):
            lo, hi = self.task_offsets[k], self.task_offsets[k + 1]
            tr = (y_train >= lo) & (y_train < hi)
            te = (y_test >= lo) & (y_test < hi)
            self.tasks.append(Task(k, torch.arange(lo, hi, device=device),
                                   images(raw.x_train[tr]), y_train[tr].to(device),
                                   images(raw.x_test[te]), y_test[te].to(device)))
        self._mean = torch.tensor(spec.mean, device=device).view(1, -1, 1, 1) * 255.0
        self._std = torch.tensor(spec.std, device=device).view(1, -1, 1, 1) * 255.0

    def task_of(self, labels: torch.Tensor) -> torch.Tensor:
        return self.label_task[labels]

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (on the device, or host chunks) -> float on the device, standardized
        per channel (what the network sees at test time)."""
        return (x.to(self.device, non_blocking=True).float() - self._mean) / self._std

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images -> augmented, standardized float batch (random crop / flip per sample)."""
        x = random_crop(x, self.spec.crop_padding)   # training rows are on the device (train_task)
        if self.spec.flip:
            x = random_hflip(x)
        return self.normalize(x)


def class_order(n_classes: int, seed: int) -> torch.Tensor:
    """algorithms.md §1: seed 0 keeps the natural order; seed s > 0 permutes with seed 42 + s."""
    if seed == 0:
        return torch.arange(n_classes)
    return torch.randperm(n_classes, generator=torch.Generator().manual_seed(42 + seed))


def split_classes(n_classes: int, n_tasks: int, nc_first_task: int | None = None) -> list[int]:
    """Classes per task: equal split, or `nc_first_task` first and the rest split evenly."""
    if nc_first_task is None:
        if n_classes % n_tasks:
            raise ConfigError(f"n_tasks={n_tasks} does not divide the {n_classes} classes evenly; "
                              f"choose a divisor of {n_classes} or set nc_first_task")
        return [n_classes // n_tasks] * n_tasks
    if nc_first_task >= n_classes:
        raise ConfigError(f"nc_first_task={nc_first_task} must be below the {n_classes} classes, "
                          f"so that the other {n_tasks - 1} tasks get some")
    if n_tasks < 2:
        raise ConfigError(f"nc_first_task={nc_first_task} needs n_tasks of 2 or more (n_tasks={n_tasks})")
    rest = n_classes - nc_first_task
    if rest % (n_tasks - 1):
        raise ConfigError(f"nc_first_task={nc_first_task} leaves {rest} classes that do not split evenly "
                          f"over the remaining {n_tasks - 1} tasks")
    return [nc_first_task] + [rest // (n_tasks - 1)] * (n_tasks - 1)
