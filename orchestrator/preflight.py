"""Pre-flight: what the engine would refuse while building a trial, refused before Ray starts.

Every distinct network of the grid is built once, without training and without data: on the
meta device (no memory), from the dataset's declared geometry with one placeholder image per
class. So the norm layers see the real feature-map sizes (IN/LN on 1x1 maps), the classes are
split into tasks (n_tasks, nc_first_task) and the method builds its buffer. (Checks that need
only the config, such as a herding buffer's capacity, ran when the grid was expanded:
TrialConfig.resolved.) The first refusal is raised as the engine's one-line ConfigError.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Iterable

from engine.config import TrialConfig
from engine.memory import build_on_meta

# Fields that only steer training, never how a trial is built: trials differing only in them
# share one build.
TRAINING_ONLY = ("seed", "buffer_size", "norm_args", "epochs", "bs", "lr", "momentum", "weight_decay",
                 "lr_milestones", "lr_gamma", "selection", "device", "data_root")


def check_builds(configs: Iterable[TrialConfig]) -> int:
    """Build each distinct network once; returns how many."""
    builds: dict[str, TrialConfig] = {}
    for cfg in configs:
        builds.setdefault(repr([getattr(cfg, f.name) for f in fields(cfg) if f.name not in TRAINING_ONLY]), cfg)
    for cfg in builds.values():
        build_on_meta(cfg)
    return len(builds)
