"""Continual datasets: one file per family, one registry of `DatasetSpec`s.

`build_dataset(cfg, device)` loads the arrays, splits the tasks and puts them on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from engine.datasets.base import ContinualDataset, DatasetSpec, RawData, Task
from engine.options import resolve_options as _resolve
from engine.registry import Registry

__all__ = ["REGISTRY", "ContinualDataset", "DatasetSpec", "RawData", "Task", "build_dataset",
           "resolve_options"]

REGISTRY: Registry[DatasetSpec] = Registry("dataset")


def resolve_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    return _resolve(f"dataset {REGISTRY.canonical(name)}", REGISTRY.get(name).options, given)


def build_dataset(cfg, device: torch.device) -> ContinualDataset:
    """`cfg` is a resolved TrialConfig."""
    spec = REGISTRY.get(cfg.dataset)
    raw = spec.load(Path(cfg.data_root).expanduser(), cfg.data_args)
    return ContinualDataset(spec, raw, n_tasks=cfg.n_tasks or spec.n_tasks, seed=cfg.seed,
                            device=device, nc_first_task=cfg.nc_first_task)


# Families register themselves on import.
from engine.datasets import cifar, digits, imagenet100, miniimg, synth, tinyimg  # noqa: E402,F401
