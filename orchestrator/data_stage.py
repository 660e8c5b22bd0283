"""The data stage: every dataset of a sweep made ready once, on the head, before Ray starts.

For each distinct (dataset, options, data root) of the planned trials, `engine.datasets.prepare`
fetches a missing downloadable dataset once (progress bar, file lock, published md5, atomic move)
and checks what is on disk; a dataset that is missing and cannot be fetched (no network,
download=false, a manual-only dataset) is one ConfigError naming it, the path and how to get it.
Trials then never download: the workers run with `NO_DOWNLOAD_ENV` set (orchestrator/cluster.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from engine.config import TrialConfig


def prepare_data(configs: Iterable[TrialConfig]) -> list[str]:
    """Make every dataset ready; returns one line per dataset saying where it is."""
    from engine import datasets

    distinct: dict[str, TrialConfig] = {}
    for cfg in configs:
        distinct.setdefault(json.dumps([cfg.dataset, cfg.data_args, cfg.data_root], sort_keys=True), cfg)
    lines = []
    for cfg in distinct.values():
        spec = datasets.REGISTRY.get(cfg.dataset)
        datasets.prepare(spec, Path(cfg.data_root), cfg.data_args)
        lines.append(f"{cfg.dataset}: ready ({spec.source.replace('<data_root>', cfg.data_root)})")
    return lines
