"""Watching a sweep where users look (issue 19), on one real local Ray started the way the
launcher starts it: Tune's own records load with Tune's tools. Slow: ~40 s on 2 cores."""
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


def test_tune_records_load_with_tunes_own_tools_with_flat_config_columns(ray_cluster, tmp_path):
    from orchestrator.trainable import train_one

    trials = plan(num_seeds=2, methods=["bn", "gn"])
    sd = SweepDir(tmp_path, "records")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials)
    (run,) = sd.tune.glob("run-*")
    df = tune.ExperimentAnalysis(str(run)).dataframe()
    assert {"config/norm", "config/seed", "config/dataset", "config/model", "config/buffer_size",
            "config/run_name", "config/trial_id"} <= set(df.columns)
    assert not [c for c in df.columns if c.startswith("config/trial/")]
    assert sorted(zip(df["config/norm"], df["config/seed"])) == [("bn", 0), ("bn", 1), ("gn", 0), ("gn", 1)]
    assert sorted(df["config/trial_id"]) == sorted(t.trial_id for t in trials)
    assert set(df["status"]) == {"finished"}
    results = tune.Tuner.restore(str(run), trainable=train_one).get_results()
    assert not results.errors and len(results) == 4
    assert sorted(r.config["run_name"] for r in results) == sorted(t.run_name for t in trials)
    assert {"config/norm", "config/seed"} <= set(results.get_dataframe().columns)


def test_tune_config_is_flat_and_gives_the_payload_back():
    from orchestrator.tune_config import payload_of, tune_config

    payload = {"trial_id": "t1", "run_name": "r", "config": {"norm": "bn", "seed": 3, "norm_args": {}},
               "out_dir": "/o", "gpu_uuid": "GPU-1"}
    config = tune_config(payload)
    assert config["norm"] == "bn" and config["seed"] == 3 and config["run_name"] == "r"
    assert config["_trial"] == {"out_dir": "/o", "gpu_uuid": "GPU-1"}
    assert payload_of(config) == payload
    with pytest.raises(ValueError, match="run_name"):
        tune_config({**payload, "config": {"run_name": "x"}})
