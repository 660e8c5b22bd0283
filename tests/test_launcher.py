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


def test_bf16_on_a_cpu_without_bf16_hardware_is_said_in_one_line(tmp_path, capsys, monkeypatch):
    import torch
    from engine.device import fast_bf16

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "none")     # NVML may list GPUs; the user allows none
    rc = launcher.main([*TINY, "--results_dir", str(tmp_path), "--precision", "bf16", "--dry_run"])
    notes = [ln for ln in capsys.readouterr().out.splitlines() if "bf16" in ln and "slower" in ln]
    assert rc == 0 and len(notes) == (0 if fast_bf16(torch.device("cpu")) else 1)


def test_run_py_command_line_is_accepted(tmp_path, capsys):
    rc = launcher.main(["--interpreter", sys.executable, "--coldsecs", "15", "--waitsecs", "25",
                        "--usage_threshold", "0.3", "--logdir", str(tmp_path / "logs"), "--models", "sgd", "er",
                        "--num_seeds", "1", "--bs", "10", "--epochs", "1", "--datasets", "seq-synth",
                        "--methods", "BN", "--buffer_mode", "ring", "--nowandb", "--wandb_project", "P",
                        "--buffer_sizes", "20", "--results_dir", str(tmp_path), "--dry_run"])
    assert rc == 0 and "= 2 trials" in capsys.readouterr().out


# Presets written by the bad-input cases below (name -> file content).
PRESETS = {
    "seedz.yaml": b"seedz: 3\n",
    "lots.yaml": b"gpus_per_trial: lots\n",
    "lr_abc.yaml": b"trial_args: {lr: abc}\n",
    "latin1.yaml": "name: caf\u00e9\n".encode("latin-1"),
    "empty.yaml": b"",
    "comments.yaml": b"# nothing but a comment\n",
    "cpus.yaml": b"cpus_per_trial: -1\n",
    "failures.yaml": b"max_failures: 1.5\n",
    "failfast.yaml": b"fail_fast: few\n",
    "threshold.yaml": b"usage_threshold: 2\n",
    "seeds.yaml": b"num_seeds: abc\n",
    "wandb.yaml": b"nowandb: maybe\n",
    "list.yaml": b"results_dir: [a, b]\n",
}
DIGITS = ["--datasets", "seq-digits", "--models", "er", "--methods", "bn", "--buffer_sizes", "20"]
CIFAR = ["--datasets", "seq-cifar10", "--models", "er", "--methods", "bn", "--buffer_sizes", "20"]

# Every bad input of issue 14 (and a few of the kind): args, the message's key words.
# "RESULTS" is the results folder of the case, "T/" the test's temp folder.
BAD_INPUTS = [
    (["--datasets", "seq-nope"], "unknown dataset 'seq-nope'"),
    (["--methods", "nope"], "unknown norm 'nope'"),
    (["--norm_grid", "bn:kappa=0.4"], "norm bn takes no option 'kappa'"),
    (["--num_seeds", "0"], "--num_seeds: '0' is not an integer of 1 or more"),
    (["--address", "127.0.0.1:1"], "cannot reach a Ray cluster"),
    (["--cpus_per_trial", "0"], "--cpus_per_trial: '0' is not a positive number"),
    # a trial field of the wrong type: from the flag, an alternative, a preset
    (["--trial_args", "lr=abc"], "lr='abc' must be a positive finite number"),
    (["--trial_args", "lr=0.1|abc"], "lr='abc' must be a positive finite number"),
    (["--config", "T/lr_abc.yaml"], "lr='abc' must be a positive finite number"),
    (["--trial_args", "momentum=fast"], "momentum='fast' must be a finite number"),
    (["--trial_args", "lr_milestones=abc"], "lr_milestones='abc' must be a positive integer"),
    (["--dashboard_port", "99999"], "--dashboard_port: '99999' is not a port number in 1..65535"),
    (["--dashboard_port", "0"], "is not a port number"),
    # presets: every value through its flag's check
    (["--config", "T/seedz.yaml"], "unknown key 'seedz'"),
    (["--config", "T/lots.yaml"], "gpus_per_trial: 'lots' is not a number of 0 or more"),
    (["--config", "T/latin1.yaml"], "not UTF-8"),
    (["--config", "T/empty.yaml"], "is empty"),
    (["--config", "T/comments.yaml"], "is empty"),
    (["--config", "T/cpus.yaml"], "cpus_per_trial: -1 is not a positive number"),
    (["--config", "T/failures.yaml"], "max_failures: 1.5 is not an integer of 0 or more"),
    (["--config", "T/failfast.yaml"], "fail_fast: 'few' is not an integer of 0 or more"),
    (["--fail_fast", "-1"], "'-1' is not an integer of 0 or more"),
    (["--trial_args", "device=cpu"], "--gpus_per_trial 0 keeps them on the CPU"),
    (["--config", "T/threshold.yaml"], "usage_threshold: 2 is not a number in (0, 1]"),
    (["--config", "T/seeds.yaml"], "num_seeds: 'abc' is not an integer of 1 or more"),
    (["--config", "T/wandb.yaml"], "nowandb: 'maybe' is not true or false"),
    (["--config", "T/list.yaml"], "results_dir: ['a', 'b'] is not a single value"),
    # argparse's own errors: one line and where the usage is
    (["--buffer_sizes", "abc"], "--buffer_sizes: 'abc' is not an integer of 0 or more (see python launcher.py --help)"),
    (["--num_seeds", "abc"], "--num_seeds: 'abc' is not an integer of 1 or more (see python launcher.py --help)"),
    (["--bs", "1.5"], "--bs: '1.5' is not an integer of 1 or more"),
    (["--gpus_per_trial", "nan"], "--gpus_per_trial: 'nan' is not a number of 0 or more"),
    (["--waitsecs", "0"], "--waitsecs: '0' is not a positive number"),
    (["--no_such_flag", "1"], "unrecognized arguments: --no_such_flag 1 (see python launcher.py --help)"),
    # refused before the grid is printed
    (["--results_dir", "T/FILE"], "is not writable"),
    (["--results_dir", "T/FILE/sub"], "is not writable"),
    (["--results_dir", "UNWRITABLE"], "is not writable"),
    (["NO_YES"], "stdin is not a terminal"),
    (["--address", "auto"], "--address auto: no running Ray cluster found"),
    # options of what is not in the grid are checked all the same
    (["--data_args", "seq-cifar10:download=maybe"], "dataset seq-cifar10 option download='maybe' is not a bool"),
    (["--norm_grid", "adab2n:kappa=9"], "norm adab2n option kappa=9.0 is above its maximum"),
    (["--data_args", "seq-nope:x=1"], "unknown dataset 'seq-nope'"),
    (["--data_args", "downlaod=false"], "--data_args downlaod: no dataset of the grid (seq-synth) takes it"),
    # pre-flight: what the engine refuses when it builds a trial
    ([*DIGITS, "--trial_args", "n_tasks=3"], "n_tasks=3 does not divide the 10 classes"),
    ([*DIGITS, "--methods", "in"], "needs more than one spatial position"),
    ([*DIGITS, "--buffer_mode", "herding", "--buffer_sizes", "5", "200"], "buffer_size=5 must be at least the 10 classes"),
    ([*DIGITS, "--setting", "offline", "--models", "icarl", "--trial_args", "n_tasks=2", "nc_first_task=20"],
     "nc_first_task=20 must be below the 10 classes"),
    ([*DIGITS, "--trial_args", "n_tasks=1", "nc_first_task=4"], "nc_first_task=4 needs n_tasks of 2 or more"),
    # the data stage: missing, corrupt, not downloadable
    ([*CIFAR, "--data_args", "download=false", "--data_root", "T/nodata"], "seq-cifar10: no CIFAR-10 at"),
    ([*CIFAR, "--data_args", "download=false", "--data_root", "T/corrupt"], "seq-cifar10: cannot read CIFAR-10"),
    ([*CIFAR, "--datasets", "seq-digits", "seq-cifar10", "--data_args", "download=false", "--data_root", "T/nodata"],
     "seq-cifar10: no CIFAR-10 at"),   # an option without `dataset:` goes to the datasets that take it
    (["--datasets", "seq-miniimg", "--models", "er", "--methods", "bn", "--buffer_sizes", "20",
      "--data_root", "T/nodata"], "seq-miniimg: no Mini-ImageNet at"),
    (["--datasets", "seq-tinyimg", "--models", "er", "--methods", "bn", "--buffer_sizes", "20",
      "--data_root", "T/nodata"], "seq-tinyimg: no TinyImageNet-200 at"),
]


@pytest.fixture
def bad_input_files(tmp_path):
    from test_datasets_formats import write_cifar

    (tmp_path / "FILE").write_text("a file, not a directory")
    for name, content in PRESETS.items():
        (tmp_path / name).write_bytes(content)
    folder = write_cifar(tmp_path / "corrupt", 10)["folder"]
    (folder / "data_batch_3").write_bytes(b"not a pickle at all")
    # root writes anywhere it has permission bits for; sysfs refuses it too
    unwritable = Path("/sys") if os.geteuid() == 0 else tmp_path / "ro"
    if unwritable != Path("/sys"):
        unwritable.mkdir()
        unwritable.chmod(0o555)
    return tmp_path, unwritable / "results"


@pytest.mark.parametrize("args, message", BAD_INPUTS, ids=[" ".join(a)[:60] for a, _ in BAD_INPUTS])
def test_bad_input_is_one_line_and_exit_2_before_ray_and_before_the_grid(bad_input_files, capsys, monkeypatch,
                                                                         args, message):
    tmp_path, unwritable = bad_input_files
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    if args == ["--address", "auto"] and _ray_running_here():
        # another Ray runs on this machine (a shared host): `auto` would find it, so point Ray's
        # own discovery (RAY_ADDRESS) at nothing instead
        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
        message = "cannot reach a Ray cluster"
    results = tmp_path / "r"
    yes = [] if args == ["NO_YES"] else ["--yes"]
    args = [a.replace("T/", f"{tmp_path}/").replace("UNWRITABLE", str(unwritable)) for a in args if a != "NO_YES"]
    rc = launcher.main([*TINY, "--num_seeds", "1", "--results_dir", str(results), *yes, *args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("error: ") and message in err and err.count("\n") == 1, err
    assert out == ""                       # nothing printed before: no grid
    assert not results.exists()            # nothing written under results
    import ray
    assert not ray.is_initialized()


def test_preset_values_take_their_flags_types(tmp_path, capsys):
    (tmp_path / "p.yaml").write_text("name: 2024\nnum_seeds: 2\ncpus_per_trial: 2\nnowandb: true\n")
    rc = launcher.main([*TINY, "--config", str(tmp_path / "p.yaml"), "--results_dir", str(tmp_path), "--dry_run"])
    out = capsys.readouterr().out
    assert rc == 0 and "Sweep '2024'" in out and "= 2 trials" in out


def _ray_running_here() -> bool:
    from ray._private.services import find_gcs_addresses

    return bool(find_gcs_addresses())


@pytest.mark.parametrize("args, message", [
    (["--setting", "bogus"], "argument --setting: invalid choice: 'bogus'"),
    (["--foo", "1"], "unrecognized arguments: --foo 1"),
    (["--buffer_size", "abc"], "argument --buffer_size: invalid int value: 'abc'"),
])
def test_engine_argparse_errors_are_one_line_and_exit_2(capsys, args, message):
    from engine import cli

    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "(see python -m engine --help)" in err
    assert err.count("\n") == 1


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
        def tune_checkpoints():   # none: the trial folder's checkpoint.pt is what a retry uses
            return list(sweep_dir.glob("_tune/*/*/checkpoint_*"))
        assert not tune_checkpoints()

        second = launch([*work, "--num_seeds", "4"], tmp_path)   # resume + one new seed
        assert second.returncode == 0, second.stdout + second.stderr
        assert f"{len(finished)} already finished, {4 - len(finished)} to run" in second.stdout
        results = {p.parent.name: p.stat().st_mtime_ns for p in sweep_dir.glob("*/result.json")}
        assert len(results) == 4
        assert all(results[tid] == mtime for tid, mtime in finished.items())   # not run twice
        assert not (sweep_dir / "_wandb").exists()                              # --nowandb
        assert not tune_checkpoints()
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


@pytest.mark.slow
def test_process_per_trial_gives_every_trial_its_own_process(tmp_path):
    """--process_per_trial: no trial process is reused, so Ray names each after its one trial."""
    run = launch([*TINY, "--num_seeds", "3", "--cpus_per_trial", "1", "--process_per_trial", "--nowandb", "--yes",
                  "--name", "fresh", "--results_dir", str(tmp_path)], tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    logs = sorted((tmp_path / "fresh" / "_logs").glob("*.txt"))
    pids = [re.search(r"start: pid (\d+)", p.read_text()).group(1) for p in logs]
    assert len(logs) == 3 and len(set(pids)) == 3
