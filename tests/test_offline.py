"""The offline exemplar protocol end to end on tiny real workloads: methods x norms, the batch
layout the norm layers see, TBBN's split sequence, best-epoch selection, checkpoint resume."""
import pytest
import torch

import engine.norms as norms
from engine.config import TrialConfig
from engine.errors import ConfigError
from engine.events import TaskEnd
from engine.methods.exemplar import ExemplarMethod
from engine.results import CHECKPOINT_FILE, load_checkpoint
from engine.batches import epoch_batches
from engine.selection import validation_loss, validation_split
from engine.trainer import build_trial, run_trial, train_task

from conftest import TINY_SYNTH

OFFLINE_METHODS = ["finetune", "lucir", "icarl", "eeil", "ssil"]


def needs_norm(name):
    if name not in norms.REGISTRY:
        pytest.skip(f"norm {name!r} is not registered yet")


def offline_cfg(**kw):
    base = dict(dataset="seq-synth", data_args=dict(TINY_SYNTH), norm="bn", setting="offline",
                buffer_mode="herding", buffer_size=20, n_tasks=2, epochs=2, lr_milestones=(1,), device="cpu")
    base.update(kw)
    return TrialConfig(**base)


@pytest.fixture
def layouts(monkeypatch):
    """Every BatchLayout the method base announces, with the batch sizes the layers that take a
    layout then receive in the training forward (a real forward-pre-hook on each of them)."""
    seen = []
    original = norms.set_layout

    def recording(net, layout):
        if seen:
            for h in seen[-1][2]:
                h.remove()
        rows = []
        def hook(module, args):
            if module.training:
                rows.append(args[0].shape[0])
        hooks = [m.register_forward_pre_hook(hook) for m in norms._layers(net, "set_layout")]
        seen.append((layout, rows, hooks))
        original(net, layout)
    monkeypatch.setattr(norms, "set_layout", recording)
    yield seen
    for h in seen[-1][2] if seen else ():
        h.remove()


@pytest.mark.parametrize("norm", ["bn", "tbbn", "adab2n"])
@pytest.mark.parametrize("model", OFFLINE_METHODS)
def test_offline_method_runs_with_a_48_16_current_first_batch(tmp_path, layouts, model, norm):
    needs_norm(norm)
    args = {"ft_epochs": 1} if model == "eeil" else {}
    result = run_trial(offline_cfg(method=model, norm=norm, method_args=args), tmp_path)
    cfg = result["config"]
    assert cfg["selection"] == "val" and cfg["bs"] == 48 and cfg["minibatch_size"] == 16
    for kind in ("class_il", "task_il"):
        assert all(v is not None and torch.isfinite(torch.tensor(v)) for v in result["metrics"][kind].values())
    first = [lay for lay, _, _ in layouts if lay.task == 0]
    later = [lay for lay, _, _ in layouts if lay.task == 1]
    assert first and later
    assert all(lay.n_memory == 0 for lay in first)                    # t = 0: current rows only
    # t = 1: [48 current | 16 exemplars], EEIL's second stage too (TBBN's fork: the full current stream)
    assert {lay.n_current for lay in later} == {48}
    for lay in later:
        assert lay.n_memory == 16
        assert (lay.task_ids[: lay.n_current] == 1).all() and (lay.task_ids[lay.n_current:] == 0).all()
    for lay, rows, _ in layouts:                                       # what the layout-taking layers received
        assert rows if norm != "bn" else not rows
        assert all(r == lay.task_ids.shape[0] for r in rows)


def test_tbbn_split_per_task_follows_the_official_sequence(tmp_path, layouts, monkeypatch):
    needs_norm("tbbn")
    tbbn = pytest.importorskip("engine.norms.tbbn")
    if not hasattr(tbbn, "tbbn_split"):
        pytest.skip("engine.norms.tbbn.tbbn_split does not exist yet")
    used = {}
    original = tbbn.tbbn_split

    def recording(n_c, n_m, t):
        r = original(n_c, n_m, t)
        used.setdefault(t, set()).add(r)
        return r
    monkeypatch.setattr(tbbn, "tbbn_split", recording)
    data = dict(n_classes=20, train_per_class=24, test_per_class=2, image_size=8)
    run_trial(offline_cfg(method="finetune", norm="tbbn", data_args=data, n_tasks=10, epochs=1,
                          buffer_size=32, selection="last", lr_milestones=()), tmp_path)
    per_task = {}
    for lay, _, _ in layouts:
        per_task.setdefault(lay.task, set()).add(original(lay.n_current, lay.n_memory, lay.task))
    expected = [1, 2, 4, 8, 8, 8, 16, 16, 16, 16]
    assert [per_task[t] for t in range(10)] == [{r} for r in expected]
    assert [used[t] for t in range(10)] == [{r} for r in expected]    # what the TBBN layers computed


@pytest.mark.parametrize("model", ["lucir", "icarl"])
def test_interrupted_offline_trial_resumes_with_memory_and_old_model(tmp_path, model):
    cfg = offline_cfg(method=model, n_tasks=3, nc_first_task=4, seed=1, bs=12, minibatch_size=4)
    whole = run_trial(cfg, tmp_path / "whole")

    def crash(event):
        if isinstance(event, TaskEnd) and event.task == 1:
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        run_trial(cfg, tmp_path / "cut", progress=crash)
    ckpt = load_checkpoint(tmp_path / "cut")
    assert ckpt["method"]["extra"]["old_net"] is not None                # the previous model is saved
    assert ckpt["method"]["buffer"]["count"] == 21                       # herding: ceil(20 / 7 seen classes) = 3 each
    tasks = []
    resumed = run_trial(cfg, tmp_path / "cut", progress=lambda e: tasks.append(e.task))
    assert sorted(set(tasks)) == [2]
    assert resumed["acc_matrix"] == whole["acc_matrix"] and resumed["steps"] == whole["steps"]
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()


def test_best_validation_epoch_is_restored(tmp_path):
    cfg = offline_cfg(method="finetune", epochs=4, lr=0.2, lr_milestones=(2,), lr_gamma=5.0).resolved()
    dataset, method = build_trial(cfg, torch.device("cpu"))
    events = []
    train_task(method, dataset, cfg, 0, events.append)
    losses = [e.val_loss for e in events]
    assert len(losses) == 4
    _, val = validation_split(dataset.tasks[0].y_train, cfg.seed, 0)
    task = dataset.tasks[0]
    restored = float(validation_loss(method, dataset, task.x_train[val], task.y_train[val]))
    assert restored == pytest.approx(min(losses), rel=1e-6)
    assert min(losses) != losses[-1]                                   # a real restore, not the last epoch


def test_validation_split_is_ten_percent_per_class_and_seeded():
    y = torch.tensor([0] * 45 + [1] * 25 + [2] * 5)                   # round(4.5)=4, round(2.5)=2, round(.5)=0
    train, val = validation_split(y, seed=0, task=3)
    assert torch.bincount(y[val], minlength=3).tolist() == [4, 2, 0]
    assert sorted(train.tolist() + val.tolist()) == list(range(75))
    assert torch.equal(val, validation_split(y, seed=0, task=3)[1])
    assert not torch.equal(val, validation_split(y, seed=1, task=3)[1])


def test_two_streams_make_an_epoch_of_the_longer_one_and_skip_partial_batches():
    cfg = offline_cfg().resolved()

    class Stub:
        memory_stream = True
        device = torch.device("cpu")
    memory = {"x": torch.zeros(2000, 1)}
    steps = epoch_batches(Stub, 4500, memory, cfg)                    # CIFAR-100 task: 4500 train, 2000 exemplars
    assert len(steps) == 124                                          # 125 memory batches; 1 partial current one
    assert all(c.numel() == 48 and m.numel() == 16 for c, m in steps)
    mem_rows = torch.cat([m for _, m in steps])
    assert mem_rows.unique().numel() == 2000 - 16                     # one memory pass less the skipped step
    first = epoch_batches(Stub, 4500, None, cfg)                      # t = 0: 64 current rows, drop_last
    assert len(first) == 4500 // 64 and all(c.numel() == 64 and m is None for c, m in first)


def test_eeil_adds_a_balanced_finetuning_stage(tmp_path):
    cfg = offline_cfg(method="eeil", method_args={"ft_epochs": 3, "ft_lr_factor": 0.1}).resolved()
    dataset, method = build_trial(cfg, torch.device("cpu"))
    y = dataset.tasks[1].y_train
    assert [s.name for s in method.stages(0, y)] == ["train"]
    main, balanced = method.stages(1, y)
    assert (balanced.epochs, balanced.lr) == (3, pytest.approx(cfg.lr * 0.1))
    # issue 15 point 4: TBBN's fork trains the second stage on the full current stream (48 + 16)
    assert balanced.rows is None and balanced.memory_rows is None and not balanced.mixed


def test_eeil_ft_balanced_trains_on_a_class_balanced_set(tmp_path):
    cfg = offline_cfg(method="eeil", method_args={"ft_balanced": True}).resolved()
    dataset, method = build_trial(cfg, torch.device("cpu"))
    method.begin_task(0)
    method.end_task(0, dataset.tasks[0].x_train, dataset.tasks[0].y_train)   # herding: 4 per old class
    y = dataset.tasks[1].y_train
    method.begin_task(1, dataset.tasks[1].x_train, y)
    stage = method.stages(1, y)[1]
    memory = {k: v[stage.memory_rows] for k, v in method.replay_memory().items()}
    labels = torch.cat([y[stage.rows], memory["y"]])
    assert torch.bincount(labels).tolist() == [2] * 10   # ceil(20 / 10 seen classes) of every class
    batches = epoch_batches(method, stage.rows.numel(), memory, cfg, stage.mixed)
    drawn = torch.cat([torch.cat([y[stage.rows][c], memory["y"][m]]) for c, m in batches])
    assert torch.bincount(drawn, minlength=10).tolist() == [2] * 10   # one stream: each row once an epoch
    for norm in ("bn", "tbbn"):   # the mixed batches train end to end
        result = run_trial(cfg.replace(norm=norm, method_args={"ft_balanced": True, "ft_epochs": 2}),
                           tmp_path / norm)
        assert all(torch.isfinite(torch.tensor(v)) for v in result["metrics"]["class_il"].values())


def test_offline_defaults_and_checks():
    assert offline_cfg(method="lucir").resolved().selection == "val"
    assert offline_cfg(method="er", buffer_mode="reservoir").resolved().selection == "last"  # mammoth: no split
    assert offline_cfg(method="finetune", selection="last").resolved().selection == "last"
    _, method = build_trial(offline_cfg(method="ssil").resolved(), torch.device("cpu"))
    assert isinstance(method, ExemplarMethod)
    with pytest.raises(ConfigError, match="herding"):
        offline_cfg(method="der").resolved()
    with pytest.raises(ConfigError, match="buffer_size=5 must be at least the 10 classes"):
        offline_cfg(method="finetune", buffer_size=5).resolved()   # before anything is built
