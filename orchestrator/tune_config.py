"""The trial config Tune sees, and the runner's payload it carries.

Tune's own records (`_tune/<run>/`: experiment state, params.json, `ExperimentAnalysis`
dataframes) show the trial config as it is, flattened as `config/<key>`. So the engine
config's fields sit at its top level (`config/norm`, `config/seed`, `config/dataset`, ...),
next to the trial's `trial_id` and `run_name`; the rest of the payload (paths, resources, W&B
settings: plumbing, not what the trial computes) goes under the one reserved key `_trial`.
"""
from __future__ import annotations

from typing import Any

PLUMBING = "_trial"
IDENTITY = ("trial_id", "run_name")


def tune_config(payload: dict[str, Any]) -> dict[str, Any]:
    """Runner payload -> Tune's trial config."""
    clash = set(payload["config"]) & {PLUMBING, *IDENTITY}
    if clash:  # an engine field of that name would be lost on the way back
        raise ValueError(f"engine config fields {sorted(clash)} clash with Tune's trial config keys")
    plumbing = {k: v for k, v in payload.items() if k != "config" and k not in IDENTITY}
    return {**payload["config"], **{k: payload[k] for k in IDENTITY}, PLUMBING: plumbing}


def payload_of(config: dict[str, Any]) -> dict[str, Any]:
    """Tune's trial config -> the runner payload (inverse of tune_config)."""
    engine = {k: v for k, v in config.items() if k != PLUMBING and k not in IDENTITY}
    return {**config[PLUMBING], **{k: config[k] for k in IDENTITY}, "config": engine}
