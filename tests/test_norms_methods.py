"""Every normalization layer in every online method: a short real trial with finite metrics."""
import math

import pytest
import torch

from engine.config import TrialConfig
from engine.norms import REGISTRY as NORMS
from engine.trainer import run_trial

ONLINE_METHODS = ["sgd", "joint", "er", "er_ace", "der", "derpp"]


@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("model", ONLINE_METHODS)
def test_layer_in_method_gives_finite_metrics(tmp_path, tiny_cfg, norm, model):
    norm_args = {"ada_t0": 1} if norm == "adab2n" else {}   # the regularizer is exercised at t = 1
    # the online protocol's batch (10 + 10) on 16 px images: every layer sees 2x2 maps or more
    cfg = tiny_cfg(method=model, norm=norm, norm_args=norm_args, n_tasks=2, bs=10, minibatch_size=10,
                   data_args={"train_per_class": 10, "test_per_class": 4, "image_size": 16})
    result = run_trial(cfg, tmp_path)
    assert result["config"]["norm"] == norm
    for kind in ("class_il", "task_il"):
        assert all(math.isfinite(v) for v in result["metrics"][kind].values()), result["metrics"]
    assert 0 <= result["metrics"]["class_il"]["faa"] <= 100


def test_instance_norm_on_1x1_maps_is_a_clear_error(tmp_path, tiny_cfg):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"norm in needs more than one spatial position .* sees 1x1"):
        run_trial(tiny_cfg(norm="in"), tmp_path)   # 8 px images reach 1x1 in the last stage


# ---- issue 15: the AdaB2N fork's ER-ACE, on a real method ------------------------------------
def build(tiny_cfg, **kw):
    import torch

    from engine.trainer import build_trial
    return build_trial(tiny_cfg(**kw).resolved(), torch.device("cpu"))


def test_er_ace_replays_only_from_task_1(tiny_cfg):
    data, method = build(tiny_cfg, method="er_ace")
    x, y = data.tasks[0].x_train[:4], data.tasks[0].y_train[:4]
    method.begin_task(0)
    method.observe(x, y)
    assert not method.buffer.is_empty() and method.compose(x, y).replay == []   # task 0, step 2
    method.begin_task(1)
    assert len(method.compose(x, y).replay) == 1


@pytest.mark.parametrize("mask, last_class_allowed", [("fork", False), ("mammoth", True)])
def test_er_ace_last_class_mask(tiny_cfg, mask, last_class_allowed):
    import torch
    import torch.nn.functional as F

    from engine.methods.base import Batch
    data, method = build(tiny_cfg, method="er_ace", method_args={"mask": mask})
    C = data.n_classes
    method.task, method.seen[:] = 4, True          # last task, class C-1 already seen
    logits, y = torch.randn(2, C), torch.tensor([C - 2, C - 2])   # a batch without class C-1
    batch = Batch(torch.zeros(2), y, torch.full_like(y, 4), 2, [], [])
    keep = [C - 2, C - 1] if last_class_allowed else [C - 2]
    expected = F.cross_entropy(logits[:, keep], torch.full_like(y, 0))
    torch.testing.assert_close(method.loss(logits, batch), expected)


def losses(tiny_cfg, model, lambd, tasks):
    """Losses of real steps at the given tasks, AdaB2N with ada_t0=0 and weight `lambd`."""
    import torch
    torch.manual_seed(0)
    data, method = build(tiny_cfg, method=model, norm="adab2n", norm_args={"ada_t0": 0, "lambd": lambd})
    out = []
    for task in tasks:
        if task != method.task:
            method.begin_task(task)
        torch.manual_seed(1)
        out.append(float(method.observe(data.tasks[task].x_train[:4], data.tasks[task].y_train[:4])))
    return out


@pytest.mark.parametrize("model, tasks, regularized", [
    ("er_ace", [0, 0, 1], [False, False, True]),   # the fork: inside `if task > 0` (ada_t0 0 == 1)
    ("der", [0, 0], [False, True]),               # the fork: once the buffer is non-empty
    ("derpp", [0, 0], [False, True]),
])
def test_adab2n_regularizer_schedule_follows_the_fork(tiny_cfg, model, tasks, regularized):
    plain, heavy = losses(tiny_cfg, model, 0.0, tasks), losses(tiny_cfg, model, 10.0, tasks)
    assert [h != p for p, h in zip(plain, heavy)] == regularized


@pytest.mark.parametrize("model", ["er", "er_ace", "der", "derpp"])
def test_whole_online_steps_have_no_data_dependent_op_so_no_host_sync(model):
    """On the meta device a tensor has no values, so an op whose result size or control flow
    depends on them (boolean-mask indexing, nonzero, unique, .item()) raises: what runs there
    never makes a GPU wait. Steps from the first through the replaying, TBBN-splitting and
    AdaB2N-weighting tasks (issue 17, point 4)."""
    from engine.datasets import REGISTRY as DATASETS, ContinualDataset
    from engine.trainer import build_trial

    meta = torch.device("meta")
    options = {"n_classes": 10, "channels": 3, "image_size": 16, "train_per_class": 12, "test_per_class": 2}
    for norm in ("bn", "tbbn", "adab2n"):
        cfg = TrialConfig(dataset="seq-synth", data_args=options, method=model, norm=norm, n_tasks=5,
                          buffer_size=40, device="cpu").resolved()
        spec = DATASETS.get("seq-synth")
        dataset = ContinualDataset(spec, spec.load(None, cfg.data_args), n_tasks=5, seed=0, device=meta)
        _, method = build_trial(cfg, meta, dataset)
        for task in range(5):
            method.begin_task(task)
            x, y = dataset.tasks[task].x_train, dataset.tasks[task].y_train
            for start in range(0, 30, 10):
                assert method.observe(x[start:start + 10], y[start:start + 10]).device == meta


def test_icarl_predicts_without_a_host_sync_per_eval_chunk():
    """iCaRL's nearest-mean scores on the meta device (where asking a tensor for a value raises):
    whether class means exist is a Python flag set once per task, not a device read per chunk."""
    from engine.datasets import REGISTRY as DATASETS, ContinualDataset
    from engine.trainer import build_trial

    meta = torch.device("meta")
    options = {"n_classes": 10, "channels": 3, "image_size": 16, "train_per_class": 12, "test_per_class": 2}
    cfg = TrialConfig(dataset="seq-synth", data_args=options, method="icarl", setting="offline", n_tasks=5,
                      buffer_mode="herding", buffer_size=40, device="cpu").resolved()
    spec = DATASETS.get("seq-synth")
    dataset = ContinualDataset(spec, spec.load(None, cfg.data_args), n_tasks=5, seed=0, device=meta)
    _, method = build_trial(cfg, meta, dataset)
    x = dataset.tasks[0].x_test.float()
    assert method.predict(x).shape == (x.shape[0], 10)              # no means yet: the network's scores
    method.load_extra_state({**method.extra_state(), "means_ready": True})
    assert method.means_ready and method.predict(x).shape == (x.shape[0], 10)   # nearest mean, on meta
