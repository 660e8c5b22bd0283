"""Trial configs: resolution precedence, canonical names, one-line errors; the engine CLI."""
import subprocess
import sys

import pytest

from engine.cli import main
from engine.config import TrialConfig
from engine.errors import ConfigError


def test_resolution_precedence_flag_over_best_args_over_protocol():
    cfg = TrialConfig(dataset="seq-cifar10", method="DER++", buffer_size=500).resolved()
    assert cfg.method == "derpp"
    assert cfg.lr == 0.03 and cfg.method_args == {"alpha": 0.2, "beta": 0.5}   # best_args, size 500
    assert cfg.bs == 10 and cfg.minibatch_size == 10 and cfg.epochs == 1       # online protocol
    cfg = TrialConfig(dataset="seq-cifar10", method="derpp", buffer_size=500, lr=0.5,
                      method_args={"beta": 1.0}).resolved()
    assert cfg.lr == 0.5 and cfg.method_args == {"alpha": 0.2, "beta": 1.0}
    assert cfg.resolved() == cfg                                              # idempotent
    assert cfg.trial_id() == cfg.replace(device="cpu", data_root="/elsewhere").trial_id()


@pytest.mark.parametrize("dataset, model, buffer_size, lr, method_args", [
    ("seq-cifar10", "derpp", 2000, 0.03, {"alpha": 0.1, "beta": 1.0}),
    ("seq-miniimg", "derpp", 500, 0.1, {"alpha": 0.3, "beta": 0.8}),
    ("seq-miniimg", "er_ace", 500, 0.1, {}),
])
def test_best_args_follow_the_adab2n_fork(dataset, model, buffer_size, lr, method_args):
    """Issue 15 point 6: the AdaB2N fork's best_args.py values for its online protocol."""
    cfg = TrialConfig(dataset=dataset, method=model, buffer_size=buffer_size).resolved()
    assert cfg.lr == lr and cfg.method_args.items() >= method_args.items()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dataset="seq-nope"), "unknown dataset 'seq-nope'; choose one of: "),
    (dict(method="icarus"), "unknown method 'icarus'"),
    (dict(norm="xn"), "unknown norm 'xn'"),
    (dict(buffer_mode="fifo"), "unknown buffer_mode 'fifo'"),
    (dict(buffer_size=0), "buffer_size=0 must be positive"),
    (dict(buffer_mode="ring", buffer_size=3), "ring buffer_size=3 is smaller than n_tasks=5"),
    (dict(bs=0), "bs=0 must be a positive integer"),
    (dict(n_tasks=3), "n_tasks=3 does not divide the 10 classes"),
    (dict(method="der", method_args={"gamma": 1}), "takes no option 'gamma'"),
    (dict(method="der", method_args={"alpha": -1}), "alpha=-1.0 is below its minimum"),
    (dict(lr=float("nan")), "lr=nan must be a positive finite number"),
])
def test_bad_input_is_one_clear_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        cfg = TrialConfig(**kwargs).resolved()
        from engine.datasets import build_dataset  # n_tasks errors surface when tasks are cut
        import torch
        build_dataset(cfg, torch.device("cpu"))
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("argv, code, message", [
    (["--dataset", "bogus"], 2, "error: unknown dataset 'bogus'"),
    (["--norm_args", "kappa"], 2, "error: --norm_args: 'kappa' is not of the form name=value"),
    (["--buffer_size", "-1"], 2, "error: buffer_size=-1 must be a non-negative integer"),
    (["--dataset", "seq-synth", "--data_args", "image_size=8,train_per_class=6,test_per_class=2",
      "--lr", "1e30"], 1, "training failed: non-finite loss"),
])
def test_cli_exit_codes(tmp_path, capsys, argv, code, message):
    assert main(argv + ["--out", str(tmp_path / "t"), "--device", "cpu"]) == code
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "t" / "result.json").exists()


def test_cli_unwritable_out_is_exit_2(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert main(["--out", str(blocker / "sub")]) == 2
    assert "is not writable" in capsys.readouterr().err


def test_cli_subprocess_runs_a_trial_and_prints_the_result_path_last(tmp_path):
    out = tmp_path / "trial"
    proc = subprocess.run([sys.executable, "-m", "engine", "--dataset", "seq-synth", "--data_args",
                           "image_size=8,train_per_class=6,test_per_class=2", "--model", "derpp",
                           "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out / "result.json")
    assert "task 5/5" in proc.stderr


def test_every_trial_field_is_an_engine_flag_with_the_fields_default():
    import dataclasses

    from engine.cli import build_parser

    actions = {a.dest: a for a in build_parser()._actions}
    for f in dataclasses.fields(TrialConfig):
        assert f.name in actions, f"TrialConfig.{f.name} has no --{f.name}"
        if f.default is not dataclasses.MISSING and f.default not in (None, False):
            assert actions[f.name].default == f.default, f.name


def test_buffer_modes_are_the_buffer_registry():
    from engine import buffers

    assert TrialConfig(buffer_mode="Ring", buffer_size=20).resolved().buffer_mode == "ring"
    with pytest.raises(ConfigError, match="choose one of: " + ", ".join(buffers.REGISTRY.names())):
        TrialConfig(buffer_mode="fifo").resolved()
