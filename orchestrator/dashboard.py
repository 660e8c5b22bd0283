"""What Ray's dashboard shows of a sweep: the job's name, the trial actors' repr, and each
trial's log header in the worker's own log (the dashboard's Logs).

Ray 2.60's Jobs page names a job by `metadata["job_name"]`: the driver's JobConfig for a plain
launch, the submission's metadata for `ray job submit` (set here unless the submitter set one).
An actor's repr is read once, when Ray creates the actor, and names the actor (Actors page,
Repr column) and its tasks (`<repr>.train`); a reused trial process keeps its first trial's
name there, so each trial also writes its name and header into the worker's log.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys

JOB_NAME_KEY = "job_name"
SUBMISSION_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"   # set by Ray's job supervisor for a submitted job's driver


def job_name(sweep_name: str) -> str:
    return f"normsweep: {sweep_name}"


def job_config(sweep_name: str | None):
    import ray

    return ray.job_config.JobConfig(metadata={JOB_NAME_KEY: job_name(sweep_name)} if sweep_name else None)


def in_ray_job() -> bool:
    """This process is the driver of a `ray job submit` (its cluster is in RAY_ADDRESS)."""
    return SUBMISSION_ENV in os.environ


def name_submitted_job(sweep_name: str | None) -> None:
    """Best effort: the submission's Name column names the sweep unless `--metadata-json` did."""
    if not sweep_name or not in_ray_job():
        return
    from ray._private import ray_constants
    from ray.dashboard.modules.job.common import JOB_ID_METADATA_KEY, JobInfoStorageClient
    from ray.experimental.internal_kv import _internal_kv_get, _internal_kv_put

    with contextlib.suppress(Exception):   # the name is a convenience; the sweep runs without it
        submission = json.loads(os.environ[SUBMISSION_ENV]).get("metadata", {}).get(JOB_ID_METADATA_KEY)
        key = JobInfoStorageClient.JOB_DATA_KEY.format(job_id=submission).encode()
        info = json.loads(_internal_kv_get(key, namespace=ray_constants.KV_NAMESPACE_JOB))
        if not (info.get("metadata") or {}).get(JOB_NAME_KEY):
            info["metadata"] = {**(info.get("metadata") or {}), JOB_NAME_KEY: job_name(sweep_name)}
            _internal_kv_put(key, json.dumps(info).encode(), overwrite=True,
                             namespace=ray_constants.KV_NAMESPACE_JOB)


def announce(run_name: str, lines: list[str]) -> None:
    """The trial's name and header lines into the worker's own stdout (the dashboard's Logs),
    which the trial's log redirection does not touch. `:actor_name:` is Ray's token that
    relabels the worker's following lines with this name."""
    out = sys.__stdout__
    if out is None:
        return
    out.write(f":actor_name:{run_name}\n" + "".join(line + "\n" for line in lines))
    out.flush()
