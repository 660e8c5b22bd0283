"""What Tune gets of each trial: the resources it asks for, and the trials one at a time."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ray.tune import PlacementGroupFactory
from ray.tune.search import Searcher

from orchestrator.gpu_pool import GpuPool, resource_name
from orchestrator.tune_config import TrialPayload, payload_of, tune_config


def trial_resources(opts):
    """What a trial asks Ray for: its CPUs and GPU share (per trial when packed by memory). With
    a GPU pool the share is also one of the custom resource of the GPU the pool chose for it
    (so its placement is the pool's)."""
    if opts.gpu_pool is None and not opts.gpu_shares:
        return {"cpu": opts.cpus_per_trial, "gpu": opts.gpus_per_trial}

    def of(config: dict[str, Any]) -> PlacementGroupFactory:
        trial = payload_of(config)
        ask = {"CPU": opts.cpus_per_trial, "GPU": trial.gpus}
        if trial.gpu_uuid:
            ask[resource_name(trial.gpu_uuid)] = trial.gpus
        return PlacementGroupFactory([ask])
    return of


class PendingTrials(Searcher):
    """Hands Tune the pending trials one at a time, in plan order.

    A `grid_search` over the payloads would do the same, but Tune saves its search state with
    every experiment checkpoint, and a grid's state is the whole grid: O(trials) per checkpoint,
    O(trials^2) per sweep. Resume is the ledger's job, so this searcher's saved state is only
    a count. Tune keeps at most `TUNE_MAX_PENDING_TRIALS_PG` trials waiting for resources
    (a searcher's default is 1; run_sweep allows one per free slot and two more).

    With a GPU pool the next trial waits (suggest returns None, Tune asks again) until a GPU
    that others leave idle has a free slot, and it names that GPU.
    """

    def __init__(self, payloads: list[TrialPayload], pool: GpuPool | None = None):
        super().__init__()
        self.payloads, self.handed_out, self.pool = payloads, 0, pool
        self.placed: dict[str, tuple[str, float]] = {}   # Tune's trial id -> (its GPU, share), until it ends

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        if self.handed_out >= len(self.payloads):
            return Searcher.FINISHED
        payload = self.payloads[self.handed_out]
        if self.pool is not None:
            gpu = self.pool.place(payload.gpus)
            if gpu is None:
                return None
            self.placed[trial_id] = (gpu, payload.gpus)
            payload = dataclasses.replace(payload, gpu_uuid=gpu)
        self.handed_out += 1
        return tune_config(payload)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        if trial_id in self.placed:
            self.pool.release(*self.placed.pop(trial_id))

    def save(self, checkpoint_path: str) -> None:
        Path(checkpoint_path).write_text(f'{{"handed_out": {self.handed_out}}}')

    def restore(self, checkpoint_path: str) -> None:
        pass  # never called: every launch is a fresh experiment over the ledger's pending trials
