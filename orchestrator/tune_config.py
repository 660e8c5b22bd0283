"""The trial config Tune sees, and the runner's payload it carries.

Tune's own records (`_tune/<run>/`: experiment state, params.json, `ExperimentAnalysis`
dataframes) show the trial config as it is, flattened as `config/<key>`. So the engine
config's fields sit at its top level (`config/norm`, `config/seed`, `config/dataset`, ...),
next to the trial's `trial_id` and `run_name`; the rest of the payload (paths, resources, W&B
settings: plumbing, not what the trial computes) goes under the one reserved key `_trial`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

PLUMBING = "_trial"
IDENTITY = ("trial_id", "run_name")


@dataclass(frozen=True)
class TrialPayload:
    """Everything a trial process needs, as plain data (it travels in Tune's trial config)."""
    trial_id: str
    run_name: str
    config: dict[str, Any]            # the resolved engine config (TrialConfig.to_dict())
    out_dir: str                      # the trial directory (orchestrator/ledger.py)
    sweep_dir: str
    log_file: str | None
    cpus: float = 1
    gpus: float = 0                   # Ray's share of a GPU
    coldsecs: float = 0.0             # --coldsecs
    wandb: dict[str, Any] | None = None   # orchestrator/tracking.py's run settings
    gpu_uuid: str | None = None       # the GPU the pool chose (orchestrator/gpu_pool.py)


def tune_config(payload: TrialPayload) -> dict[str, Any]:
    """Runner payload -> Tune's trial config."""
    clash = set(payload.config) & {PLUMBING, *IDENTITY}
    if clash:  # an engine field of that name would be lost on the way back
        raise ValueError(f"engine config fields {sorted(clash)} clash with Tune's trial config keys")
    fields = dataclasses.asdict(payload)
    plumbing = {k: v for k, v in fields.items() if k != "config" and k not in IDENTITY}
    return {**payload.config, **{k: fields[k] for k in IDENTITY}, PLUMBING: plumbing}


def payload_of(config: dict[str, Any]) -> TrialPayload:
    """Tune's trial config -> the runner payload (inverse of tune_config)."""
    engine = {k: v for k, v in config.items() if k != PLUMBING and k not in IDENTITY}
    return TrialPayload(**config[PLUMBING], **{k: config[k] for k in IDENTITY}, config=engine)
