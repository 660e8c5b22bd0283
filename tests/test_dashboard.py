"""Watching a sweep where users look (issue 19), on one real local Ray started the way the
launcher starts it: the dashboard names the job, the trial actors and their tasks, and each
worker's log carries its trials' headers (seen through Ray's state API, what the dashboard
reads); our metrics are on Ray's Prometheus endpoint; Tune's own records load with Tune's
tools. Slow: ~1 min on 2 cores."""
import re
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
from ray import tune

from orchestrator.cluster import ClusterOptions, session
from orchestrator.ledger import SweepDir
from orchestrator.runner import RunOptions, run_sweep
from test_runner import plan

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_cluster():
    with session(ClusterOptions(num_cpus=2, num_gpus=0, sweep_name="watched"), say=print) as info:
        yield info


@pytest.fixture(scope="module")
def watched_sweep(ray_cluster, tmp_path_factory):
    """Three trials on two trial processes (reused), as the dashboard sees them."""
    trials = plan(num_seeds=3)
    sd = SweepDir(tmp_path_factory.mktemp("watched"), "watched")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials)
    return trials, sd


def test_the_job_is_named_after_the_sweep(ray_cluster):
    import ray
    from ray.util.state import list_jobs

    (job,) = [j for j in list_jobs(detail=True) if j.job_id == ray.get_runtime_context().get_job_id()]
    assert job.metadata["job_name"] == "normsweep: watched"   # the Jobs page's Name column


def test_trial_actors_and_tasks_carry_run_names_and_logs_start_with_the_trial_header(watched_sweep):
    from ray.util.state import get_log, list_actors, list_tasks

    trials, sd = watched_sweep
    names = {t.run_name for t in trials}
    # Actors page: Repr = the run name of the trial each process was made for (Ray reads it once;
    # two or three processes ran the three trials, as Tune's reuse happened to go)
    actors = [a for a in list_actors(detail=True) if a.class_name.endswith("ResourceTrainable")]
    assert len(actors) in (2, 3) and {a.repr_name for a in actors} <= names
    deadline = time.time() + 30
    while True:   # task events reach the state API a little after the tasks ran
        task_names = {t.name for t in list_tasks(filters=[("type", "=", "ACTOR_TASK")], detail=True, limit=10000)}
        if {a.repr_name + ".train" for a in actors} <= task_names or time.time() > deadline:
            break
        time.sleep(1)
    assert {a.repr_name + ".train" for a in actors} <= task_names  # the job page's task names
    worker_logs = "".join("".join(get_log(actor_id=a.actor_id, suffix="out")) for a in actors)
    for t in trials:                                               # Logs: each trial's header
        own = Path(sd.planned(t.trial_id)["log_file"]).read_text().splitlines()
        header = [re.sub(r"^\[[\d:]+\] ", "", line) for line in own[:2]]
        assert header[0].startswith("start: pid") and header[1].startswith("same trial by hand:")
        block = f":actor_name:{t.run_name}\ntrial {t.run_name} ({t.trial_id}), log {sd.planned(t.trial_id)['log_file']}\n"
        assert block + "\n".join(header) + "\n" in worker_logs


def test_sweep_and_trial_metrics_are_on_rays_prometheus_endpoint(watched_sweep):
    import ray

    from orchestrator.ray_metrics import SweepGauges

    trials, _ = watched_sweep
    SweepGauges("watched").gpu("GPU-fake-uuid", +2)   # what the driver sets when a trial gets a GPU
    (node,) = [n for n in ray.nodes() if n["Alive"]]
    url = f"http://127.0.0.1:{node['MetricsExportPort']}/metrics"
    wanted = ['ray_normsweep_trials{', 'state="finished"', 'ray_normsweep_trial_steps_per_s{',
              'ray_normsweep_trial_task{', 'ray_normsweep_trial_class_il_acc{', 'ray_normsweep_tasks_finished',
              'ray_normsweep_gpu_trials{', 'gpu="GPU-fake-uuid"', *(f'run="{t.run_name}"' for t in trials)]
    deadline, text = time.time() + 60, ""
    while time.time() < deadline:   # the node's agent exports every few seconds
        text = urlopen(url, timeout=10).read().decode()
        if all(w in text for w in wanted):
            break
        time.sleep(2)
    ours = "\n".join(line for line in text.splitlines() if "normsweep" in line)
    assert all(w in text for w in wanted), [w for w in wanted if w not in text]
    finished = re.search(r'ray_normsweep_trials\{[^}]*state="finished"[^}]*\} (\S+)', ours)
    assert finished and float(finished.group(1)) == 3, ours
    assert re.search(r'ray_normsweep_trial_task\{[^}]*\} 5\.0', ours), ours      # tasks 1..5: the last


def test_tune_records_load_with_tunes_own_tools_with_flat_config_columns(ray_cluster, tmp_path):
    from orchestrator.trainable import TrialTrainable

    trials = plan(num_seeds=2, methods=["bn", "gn"])
    sd = SweepDir(tmp_path, "records")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials)
    (run,) = sd.tune.glob("run-*")
    df = tune.ExperimentAnalysis(str(run)).dataframe()
    assert {"config/norm", "config/seed", "config/dataset", "config/method", "config/buffer_size",
            "config/run_name", "config/trial_id"} <= set(df.columns)
    assert not [c for c in df.columns if c.startswith("config/trial/")]
    assert sorted(zip(df["config/norm"], df["config/seed"])) == [("bn", 0), ("bn", 1), ("gn", 0), ("gn", 1)]
    assert sorted(df["config/trial_id"]) == sorted(t.trial_id for t in trials)
    assert set(df["status"]) == {"finished"}
    results = tune.Tuner.restore(str(run), trainable=TrialTrainable).get_results()
    assert not results.errors and len(results) == 4
    assert sorted(r.config["run_name"] for r in results) == sorted(t.run_name for t in trials)
    assert {"config/norm", "config/seed"} <= set(results.get_dataframe().columns)


def test_tune_config_is_flat_and_gives_the_payload_back():
    import dataclasses

    from orchestrator.tune_config import TrialPayload, payload_of, tune_config

    payload = TrialPayload(trial_id="t1", run_name="r", config={"norm": "bn", "seed": 3, "norm_args": {}},
                           out_dir="/o", sweep_dir="/s", log_file=None, gpu_uuid="GPU-1")
    config = tune_config(payload)
    assert config["norm"] == "bn" and config["seed"] == 3 and config["run_name"] == "r"
    assert config["_trial"]["out_dir"] == "/o" and config["_trial"]["gpu_uuid"] == "GPU-1"
    assert not {"trial_id", "run_name", "config"} & set(config["_trial"])
    assert payload_of(config) == payload
    with pytest.raises(ValueError, match="run_name"):
        tune_config(dataclasses.replace(payload, config={"run_name": "x"}))
