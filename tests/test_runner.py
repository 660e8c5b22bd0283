"""The runner on a real local Ray (started once for the module the way the launcher starts it,
declaring 4 fake GPUs on 2 CPUs): dashboard, GPU packing, retries from checkpoints, failures
without retries, W&B offline runs. Slow-ish: ~1 min on 2 cores."""
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

import pytest

from orchestrator import sweep
from orchestrator.cluster import ClusterOptions, session
from orchestrator.ledger import SweepDir, record_error
from orchestrator.runner import RunOptions, run_sweep
from orchestrator.tune_callback import PLACEMENT_KEYS

pytestmark = pytest.mark.slow
TINY = {"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}}


@pytest.fixture(scope="module")
def ray_cluster():
    with session(ClusterOptions(num_cpus=2, num_gpus=4), say=print) as info:
        yield info


def plan(**flags):
    base = dict(datasets=["seq-synth"], models=["sgd"], methods=["bn"], num_seeds=1, buffer_sizes=[20],
                data_args=TINY)
    base.update(flags)
    return sweep.expand(sweep.spec_from_flags(base))


def log_starts(log_file):
    return re.findall(r"start: pid (\d+)", Path(log_file).read_text())


def test_dashboard_url_has_a_scheme_and_answers_with_the_documented_token(ray_cluster):
    url = ray_cluster.dashboard_url
    assert url.startswith("http://127.0.0.1:")
    mode = json.load(urlopen(f"{url}/api/authentication_mode", timeout=10))["authentication_mode"]
    assert ray_cluster.token_auth == (mode == "token")
    if mode != "token":
        assert urlopen(f"{url}/api/version", timeout=10).status == 200
        return
    with pytest.raises(HTTPError) as refused:
        urlopen(f"{url}/api/version", timeout=10)
    assert refused.value.code == 401
    ray_cli = Path(sys.executable).with_name("ray")   # the CLI of this environment, activated or not
    token = subprocess.run([str(ray_cli), "get-auth-token"], capture_output=True, text=True, check=True).stdout.strip()
    request = Request(f"{url}/api/version", headers={"Authorization": f"Bearer {token.splitlines()[-1]}"})
    assert urlopen(request, timeout=10).status == 200


def test_fractional_gpus_pack_four_trials_per_gpu_and_wandb_runs_offline(ray_cluster, tmp_path):
    trials = [dataclasses.replace(t, config=dataclasses.replace(t.config, device="cpu"))  # Ray's GPUs are
              for t in plan(num_seeds=4)]                                               # fake here
    sd = SweepDir(tmp_path, "gpu")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=0.5, gpus_per_trial=0.25, wandb_mode="offline"))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials) and not out.failed
    seen = [out.last_results[t.trial_id]["cuda_visible_devices"] for t in trials]
    assert all(re.fullmatch(r"[0-3]", cvd) for cvd in seen), seen     # exactly one GPU each
    assert max(seen.count(g) for g in set(seen)) <= 4                   # at most 4 x 0.25 per GPU
    # the launcher keeps where each trial ran, not its whole Tune result (metrics are in result.json)
    assert all(set(out.last_results[t.trial_id]) <= set(PLACEMENT_KEYS) for t in trials)
    assert {out.last_results[t.trial_id]["status"] for t in trials} == {"finished"}
    runs = list((sd.wandb / "wandb").glob("offline-run-*"))
    assert sorted(r.name.rsplit("-", 1)[-1] for r in runs) == sorted(t.trial_id for t in trials)
    for t in trials:  # the sweep directory contract
        planned = json.loads((sd.trial_dir(t.trial_id) / "config.json").read_text())
        assert planned["run_name"] == t.run_name and planned["config"] == t.config.to_dict()
        assert Path(planned["log_file"]).name == f"{t.run_name}.txt"
        assert (sd.trial_dir(t.trial_id) / "result.json").exists()
    # Tune saves its search state with every experiment checkpoint: it must not be the grid
    # (O(trials) per checkpoint, O(trials^2) per sweep; a grid_search's basic-variant-state is).
    (run,) = sd.tune.glob("run-*")
    search_state = [f for f in run.iterdir() if f.name.startswith(("searcher-state", "search_gen_state",
                                                                    "basic-variant-state"))]
    assert search_state and not [f.name for f in search_state
                                 if any(t.trial_id.encode() in f.read_bytes() for t in trials)]


def test_a_trial_given_a_gpu_it_cannot_use_fails_once_in_one_line(ray_cluster, tmp_path):
    trials = plan(seeds=[5])                                  # device auto; Ray grants a (fake) GPU
    sd = SweepDir(tmp_path, "nocuda")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, gpus_per_trial=1, max_failures=3))
    assert not out.finished and len(out.failed) == 1
    assert "device='cuda' cannot be used" in out.failed[0].error and "\n" not in out.failed[0].error
    assert len(log_starts(out.failed[0].log_file)) == 1                  # never retried, never on the CPU


def test_zero_gpu_trials_see_no_gpu_and_nowandb_leaves_no_runs(ray_cluster, tmp_path):
    trials = plan(seeds=[7])
    sd = SweepDir(tmp_path, "cpu")
    record_error(sd.trial_dir(trials[0].trial_id), trials[0].trial_id, "old failure", None)
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, gpus_per_trial=0, wandb_mode="disabled"))
    assert out.finished == [trials[0].trial_id]
    assert out.last_results[trials[0].trial_id]["cuda_visible_devices"] == ""
    assert not sd.wandb.exists()
    assert not (sd.trial_dir(trials[0].trial_id) / "error.json").exists()   # stale error.json removed


def test_non_finite_loss_fails_once_without_retries(ray_cluster, tmp_path):
    trials = plan(trial_args=["lr=1e30"])
    sd = SweepDir(tmp_path, "nan")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, max_failures=3))
    assert not out.finished and [f.trial_id for f in out.failed] == [trials[0].trial_id]
    assert "non-finite loss" in out.failed[0].error
    error = json.loads((sd.trial_dir(trials[0].trial_id) / "error.json").read_text())
    assert error["trial_id"] == trials[0].trial_id and "non-finite" in error["error"]
    assert error["log_file"] == out.failed[0].log_file
    assert len(log_starts(error["log_file"])) == 1                      # never retried


def test_trial_killed_mid_run_is_retried_from_its_checkpoint(ray_cluster, tmp_path):
    trials = plan(models=["er"], data_args={"seq-synth": {"train_per_class": 80, "test_per_class": 4,
                                                          "image_size": 16}})
    t = trials[0]
    sd = SweepDir(tmp_path, "kill")
    log_file = sd.logs / f"{t.run_name}.txt"
    killed = {}

    def kill_after_first_task():
        ckpt = sd.trial_dir(t.trial_id) / "checkpoint.pt"
        deadline = time.time() + 120
        while time.time() < deadline and not ckpt.exists():
            time.sleep(0.05)
        pid = int(log_starts(log_file)[-1])
        killed["pid"] = pid
        os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_after_first_task, daemon=True)
    killer.start()
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, max_failures=2))
    killer.join(timeout=5)
    assert killed, "the trial finished before it could be killed"
    assert out.finished == [t.trial_id] and not out.failed
    log = log_file.read_text()
    starts = log_starts(log_file)
    assert len(starts) == 2 and int(starts[0]) == killed["pid"], log
    after_retry = log[log.index(f"start: pid {starts[1]}"):]
    assert "resuming from its checkpoint" in after_retry.splitlines()[0], log   # the trial folder's
    first_task = int(re.search(r"task (\d+)/5:", after_retry).group(1))
    assert first_task >= 2, f"the retried trial restarted from task 1:\n{log}"
    result = json.loads((sd.trial_dir(t.trial_id) / "result.json").read_text())
    assert len(result["acc_matrix"]["class_il"]) == 5
    assert not list(sd.tune.glob("*/*/checkpoint_*"))     # none handed to Tune (issue 20)


def test_tune_checkpoints_an_older_version_left_are_pruned_for_finished_trials_only(ray_cluster, tmp_path):
    """Versions before issue 20 handed every task checkpoint to Tune; a killed launch left them."""
    done, pending = plan(seeds=[11]), plan(seeds=[12])
    sd = SweepDir(tmp_path, "legacy")
    legacy = {}
    for t in (done[0], pending[0]):
        legacy[t.trial_id] = sd.tune / "run-20261201-000000" / t.trial_id / "checkpoint_000002"
        legacy[t.trial_id].mkdir(parents=True)
        (legacy[t.trial_id] / "checkpoint.pt").write_bytes(b"old")
    assert run_sweep(done, sd, RunOptions(cpus_per_trial=1)).finished == [done[0].trial_id]
    assert not legacy[done[0].trial_id].exists() and legacy[pending[0].trial_id].exists()



def test_the_logged_command_reproduces_the_trial_bit_for_bit(ray_cluster, tmp_path):
    trials = plan(models=["derpp"], seeds=[3])
    sd = SweepDir(tmp_path, "by_hand")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, gpus_per_trial=0, wandb_mode="disabled"))
    swept = json.loads((sd.trial_dir(trials[0].trial_id) / "result.json").read_text())
    log = Path(sd.planned(trials[0].trial_id)["log_file"]).read_text()
    command = re.search(r"same trial by hand: python (-m engine .*)", log).group(1)
    assert "--threads 1 " in command                      # the sweep's thread count, not the machine's
    command = re.sub(r"--out \S+", f"--out {tmp_path / 'again'}", command)
    by_hand = subprocess.run([sys.executable, *command.split()], check=True, capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    again = json.loads((tmp_path / "again" / "result.json").read_text())
    assert again["trial_id"] == swept["trial_id"] and again["acc_matrix"] == swept["acc_matrix"]
    task_lines = re.compile(r"task \d+/\d+: class-IL \S+  task-IL \S+")   # one writer (TaskEnd.line)
    assert task_lines.findall(by_hand.stderr) and task_lines.findall(by_hand.stderr) == task_lines.findall(log)


def test_engine_refuses_a_thread_count_below_one():
    run = subprocess.run([sys.executable, "-m", "engine", "--threads", "0"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 2 and run.stderr.strip() == "error: --threads must be >= 1, got 0"


def test_a_long_sweep_runs_as_consecutive_tune_experiments_each_trial_once(ray_cluster, tmp_path):
    trials = plan(num_seeds=5)
    sd = SweepDir(tmp_path, "batches")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, trials_per_tuner=2))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials) and not out.failed
    runs = sorted(sd.tune.glob("run-*"))
    assert [r.name[-4:] for r in runs] == ["-001", "-002", "-003"]
    assert sorted(d.name for r in runs for d in r.iterdir() if d.is_dir()) == sorted(t.trial_id for t in trials)
    assert all(len(log_starts(sd.planned(t.trial_id)["log_file"])) == 1 for t in trials)


def test_identical_config_errors_stop_the_sweep_and_leave_the_rest_pending(ray_cluster, tmp_path):
    trials = plan(num_seeds=8, trial_args=["nc_first_task=999"])
    sd = SweepDir(tmp_path, "broken")
    out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, fail_fast=2, wandb_mode="disabled",
                                           trials_per_tuner=3))   # the stop holds across experiments
    assert out.stopped is not None and out.stopped.count == 2 and "nc_first_task" in out.stopped.error
    assert not out.finished and 2 <= len(out.failed) < 8
    assert out.not_started == 8 - len(out.failed)
    assert sum(not sd.is_done(t.trial_id) for t in trials) == 8             # the rest stay pending
