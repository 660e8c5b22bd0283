"""launcher.py end to end: exit codes, --dry_run, the confirmation, run.py's flags, W&B offline,
and resume after `kill -9` of the launcher. The end-to-end cases start the launcher as a
subprocess (each starts its own local Ray: ~1.5 min together on 2 cores)."""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import launcher

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--datasets", "seq-synth", "--models", "sgd", "--methods", "bn", "--buffer_sizes", "20",
        "--data_args", "seq-synth:train_per_class=8,test_per_class=4,image_size=8"]


def launch(args, tmp_path, **kw):
    """The launcher as the user runs it; W&B sees no key (HOME without ~/.netrc)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(tmp_path / "home"), PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / "launcher.py"), *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300, **kw)


# ---- fast: in-process, no Ray ---------------------------------------------------------------------

def test_dry_run_prints_the_grid_and_writes_nothing(tmp_path, capsys):
    rc = launcher.main([*TINY, "--num_seeds", "2", "--results_dir", str(tmp_path), "--name", "d", "--dry_run"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "seeds        2: 0, 1" in out and "= 2 trials" in out and "0 already finished, 2 to run" in out
    assert "seq-synth_ep1_sgd_buf20_bn_seed1_reservoir" in out
    assert not (tmp_path / "d").exists()


def test_run_py_command_line_is_accepted(tmp_path, capsys):
    rc = launcher.main(["--interpreter", sys.executable, "--coldsecs", "15", "--waitsecs", "25",
                        "--usage_threshold", "0.3", "--logdir", str(tmp_path / "logs"), "--models", "sgd", "er",
                        "--num_seeds", "1", "--bs", "10", "--epochs", "1", "--datasets", "seq-synth",
                        "--methods", "BN", "--buffer_mode", "ring", "--nowandb", "--wandb_project", "P",
                        "--buffer_sizes", "20", "--results_dir", str(tmp_path), "--dry_run"])
    assert rc == 0 and "= 2 trials" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--datasets", "seq-nope"], "unknown dataset 'seq-nope'"),
    (["--methods", "nope"], "unknown norm 'nope'"),
    (["--norm_grid", "bn:kappa=0.4"], "norm bn takes no option 'kappa'"),
    (["--num_seeds", "0"], "--num_seeds 0 must be at least 1"),
    (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster"),
    (["--results_dir", "FILE/sub"], "is not writable"),
    (["--config", "BAD.yaml"], "unknown key 'seedz'"),
    (["--cpus_per_trial", "0"], "--cpus_per_trial 0 must be positive"),
])
def test_bad_input_is_one_line_and_exit_2_before_ray_starts(tmp_path, capsys, args, message):
    (tmp_path / "FILE").write_text("a file, not a directory")
    (tmp_path / "BAD.yaml").write_text("seedz: 3\n")
    args = [a.replace("FILE", str(tmp_path / "FILE")).replace("BAD.yaml", str(tmp_path / "BAD.yaml"))
            for a in args]
    rc = launcher.main([*TINY, "--num_seeds", "1", "--results_dir", str(tmp_path / "r"), "--yes", *args])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1
    import ray
    assert not ray.is_initialized()


def test_without_a_terminal_and_without_yes_it_refuses(tmp_path):
    proc = launch([*TINY, "--num_seeds", "1", "--results_dir", str(tmp_path)], tmp_path)
    assert proc.returncode == 2
    assert "pass --yes" in proc.stderr and "Traceback" not in proc.stderr
    assert "Confirm" not in proc.stdout


def test_interpreter_flag_reexecutes_under_that_python(tmp_path):
    wrapper = tmp_path / "mypython"
    wrapper.write_text(f"#!/bin/sh\necho REEXECUTED >&2\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    proc = launch(["--interpreter", str(wrapper), *TINY, "--num_seeds", "1", "--results_dir", str(tmp_path),
                   "--dry_run"], tmp_path)
    assert proc.returncode == 0 and proc.stderr.count("REEXECUTED") == 1 and "= 1 trials" in proc.stdout


# ---- slow: the launcher as a process, with its own Ray -------------------------------------------

@pytest.mark.slow
def test_a_failing_trial_exits_1_with_its_log_and_wandb_runs_offline(tmp_path):
    proc = launch([*TINY, "--seeds", "0", "--trial_args", "lr=0.05|1e30", "--results_dir", str(tmp_path),
                   "--name", "e2e", "--yes"], tmp_path)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out, err = proc.stdout, proc.stderr
    assert "Ray dashboard: http://127.0.0.1:" in out
    assert "no API key" in out and "wandb sync " in out
    assert "1 of 2 trials failed" in err and "non-finite loss" in err
    log = re.search(r"log: (\S+_lr1e\+30\.txt)", err).group(1)
    assert Path(log).exists() and "FAILED (not retried)" in Path(log).read_text()
    sweep_dir = tmp_path / "e2e"
    ids = [p.parent.name for p in sweep_dir.glob("*/config.json")]
    assert len(ids) == 2
    runs = {p.name.rsplit("-", 1)[-1] for p in (sweep_dir / "_wandb" / "wandb").glob("offline-run-*")}
    assert runs == set(ids)                                  # one offline W&B run per trial
    assert "Sweep " in out and "trials.csv" in out           # the report's summary
    (sweep_dir / "trials.csv").unlink()
    rc = launcher.main(["--report_only", "--results_dir", str(tmp_path), "--name", "e2e"])
    assert rc == 0 and (sweep_dir / "trials.csv").exists()    # re-aggregated, nothing run
    assert len(list(sweep_dir.glob("*/config.json"))) == 2


def test_report_only_on_a_sweep_without_results_is_exit_2(tmp_path, capsys):
    rc = launcher.main(["--report_only", "--results_dir", str(tmp_path), "--name", "none"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ") and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_kill_9_of_the_launcher_then_rerun_finishes_the_rest_and_new_seeds_only(tmp_path):
    work = ["--datasets", "seq-synth", "--models", "er", "--methods", "bn", "--buffer_sizes", "20",
            "--data_args", "seq-synth:train_per_class=30,test_per_class=4,image_size=8",
            "--results_dir", str(tmp_path), "--name", "k", "--nowandb", "--yes"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    first = subprocess.Popen([sys.executable, str(ROOT / "launcher.py"), *work, "--num_seeds", "3"],
                             cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    sweep_dir = tmp_path / "k"
    try:
        deadline = time.time() + 240
        while time.time() < deadline and not list(sweep_dir.glob("*/result.json")):
            assert first.poll() is None, "the launcher ended before it could be killed"
            time.sleep(0.2)
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        time.sleep(2)  # Ray's own processes share the launcher's fate
        finished = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/result.json")}
        assert 1 <= len(finished) < 3, "kill came too late to test anything"

        second = launch([*work, "--num_seeds", "4"], tmp_path)   # resume + one new seed
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{len(finished)} already finished, {4 - len(finished)} to run" in second.stdout
        results = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/result.json")}
        assert len(results) == 4
        assert all(results[tid] == mtime for tid, mtime in finished.items())   # not run twice
        assert not (sweep_dir / "_wandb").exists()                              # --nowandb
        for tid in finished:
            log = json.loads((sweep_dir / tid / "config.json").read_text())["log_file"]
            assert Path(log).read_text().count("start: pid") == 1

        third = launch([*work, "--num_seeds", "4"], tmp_path)
        assert third.returncode == 0 and "Nothing to run" in third.stdout
    finally:
        try:
            os.killpg(first.pid, signal.SIGKILL)   # Ray helpers of the killed launcher, if any linger
        except ProcessLookupError:
            pass
