"""Continual datasets: one file per family, one registry of `DatasetSpec`s.

`build_dataset(cfg, device)` loads the arrays, splits the tasks and puts them on the device.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch

from engine.datasets.base import ContinualDataset, DatasetSpec, RawData, Task
from engine.datasets.download import downloads_allowed, fetch
from engine.options import resolve_options as _resolve
from engine.registry import Registry

__all__ = ["REGISTRY", "ContinualDataset", "DatasetSpec", "RawData", "Task", "build_dataset",
           "fetch_missing", "prepare", "resolve_options"]

# `@REGISTRY.register(name, n_tasks=..., mean=..., ...)` on a family's load function
REGISTRY: Registry[DatasetSpec] = Registry("dataset", entry=lambda load, name, **fields: DatasetSpec(name, load, **fields))


def resolve_options(name: str, given: Mapping[str, Any]) -> dict[str, Any]:
    return _resolve(f"dataset {REGISTRY.canonical(name)}", REGISTRY.get(name).options, given)


def build_dataset(cfg, device: torch.device) -> ContinualDataset:
    """`cfg` is a resolved TrialConfig."""
    spec = REGISTRY.get(cfg.dataset)
    root = Path(cfg.data_root).expanduser()
    fetch_missing(spec, root, cfg.data_args)
    raw = spec.load(root, cfg.data_args)
    return ContinualDataset(spec, raw, n_tasks=cfg.n_tasks or spec.n_tasks, seed=cfg.seed,
                            device=device, nc_first_task=cfg.nc_first_task)


def prepare(spec: DatasetSpec, root: Path, options: Mapping[str, Any]) -> None:
    """Make the data ready under `root` before any trial: fetched when missing (and download is
    allowed), then checked, cheaply where the family has a `check`. One-line ConfigError if not."""
    fetch_missing(spec, root, options)
    (spec.check or spec.load)(root, options)


def fetch_missing(spec: DatasetSpec, root: Path, options: Mapping[str, Any]) -> None:
    """Download a downloadable dataset whose folder is missing, unless download is off (the
    option, or inside sweep trials); the loader then says what is missing and how to get it."""
    archive = spec.archive
    if (archive is not None and options.get("download", True) and downloads_allowed()
            and not (root / archive.folder).exists()):
        fetch(spec.name, archive, root)


# Families register themselves on import.
from engine.datasets import cifar, digits, imagenet100, miniimg, synth, tinyimg  # noqa: E402,F401
