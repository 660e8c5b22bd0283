"""End-to-end engine behaviour on tiny real workloads: resume, determinism, every method."""
import copy
import json
import math

import pytest
import torch

from engine.errors import ConfigError, TrainingError
from engine.events import EpochEnd, TaskEnd
from engine.methods import REGISTRY as METHODS
from engine.results import CHECKPOINT_FILE, RESULT_FILE
from engine.trainer import build_trial, run_trial


class Crash(Exception):
    pass


def crash_after(task_index):
    def progress(event):
        if isinstance(event, TaskEnd) and event.task == task_index:
            raise Crash()
    return progress


@pytest.mark.parametrize("model", ["derpp", "er_ace"])
def test_interrupted_trial_resumes_to_the_same_metrics(tmp_path, tiny_cfg, model):
    cfg = tiny_cfg(method=model, seed=1)
    whole = run_trial(cfg, tmp_path / "whole")
    with pytest.raises(Crash):
        run_trial(cfg, tmp_path / "cut", progress=crash_after(1))
    assert (tmp_path / "cut" / CHECKPOINT_FILE).exists() and not (tmp_path / "cut" / RESULT_FILE).exists()
    tasks_seen = []
    resumed = run_trial(cfg, tmp_path / "cut", progress=lambda e: tasks_seen.append(e.task))
    assert tasks_seen == [2, 3, 4]                      # continued from the last finished task
    assert resumed["acc_matrix"] == whole["acc_matrix"]
    assert resumed["metrics"] == whole["metrics"]
    assert resumed["steps"] == whole["steps"]
    assert not (tmp_path / "cut" / CHECKPOINT_FILE).exists()


def test_same_config_and_seed_give_identical_metrics(tmp_path, tiny_cfg):
    a = run_trial(tiny_cfg(method="der", seed=2), tmp_path / "a")
    b = run_trial(tiny_cfg(method="der", seed=2), tmp_path / "b")
    assert a["acc_matrix"] == b["acc_matrix"] and a["trial_id"] == b["trial_id"]
    c = run_trial(tiny_cfg(method="der", seed=3), tmp_path / "c")
    assert c["trial_id"] != a["trial_id"]


def test_finished_trial_is_not_run_again(tmp_path, tiny_cfg):
    cfg = tiny_cfg(method="sgd")
    first = run_trial(cfg, tmp_path)
    events = []
    again = run_trial(cfg, tmp_path, progress=events.append)
    assert events == [] and again == first


@pytest.mark.parametrize("model", METHODS.names())
def test_every_method_gives_finite_metrics_and_a_complete_result(tmp_path, tiny_cfg, model):
    result = run_trial(tiny_cfg(method=model), tmp_path)
    on_disk = json.loads((tmp_path / RESULT_FILE).read_text())
    assert on_disk == result
    assert result["status"] == "finished" and result["config"]["method"] == model
    assert len(result["acc_matrix"]["class_il"]) == 5
    assert [len(row) for row in result["acc_matrix"]["task_il"]] == [1, 2, 3, 4, 5]
    for kind in ("class_il", "task_il"):
        for name, value in result["metrics"][kind].items():
            assert value is not None and torch.isfinite(torch.tensor(value)), (kind, name)
    assert result["steps"] > 0 and result["steps_per_s"] > 0 and result["device"] == "cpu"


def test_non_finite_loss_fails_naming_task_and_step_without_result(tmp_path, tiny_cfg):
    with pytest.raises(TrainingError, match=r"non-finite loss .* task 1/5, epoch 1, step \d+"):
        run_trial(tiny_cfg(method="er", lr=1e30), tmp_path)
    assert not (tmp_path / RESULT_FILE).exists()


def test_offline_setting_runs_epochs_with_a_schedule(tmp_path, tiny_cfg):
    result = run_trial(tiny_cfg(setting="offline", epochs=2, lr_milestones=(1,), n_tasks=2), tmp_path)
    cfg = result["config"]
    assert cfg["epochs"] == 2 and cfg["lr_milestones"] == [1] and cfg["weight_decay"] > 0
    per_task_steps = 2 * -(-(12 * 5) // 4)   # 2 epochs x ceil(60 rows / bs 4)
    assert result["steps"] == 2 * per_task_steps


def test_offline_learning_rate_follows_the_multistep_schedule_every_stage(tmp_path, tiny_cfg):
    """Each epoch trains at lr * gamma ** (milestones reached), restarting at every task (FACIL)."""
    events = []
    cfg = tiny_cfg(setting="offline", epochs=4, lr=0.1, lr_milestones=(1, 3), lr_gamma=0.5, n_tasks=2)
    run_trial(cfg, tmp_path, events.append)
    rates = [(e.task, e.lr) for e in events if isinstance(e, EpochEnd)]
    assert rates == [(t, lr) for t in range(2) for lr in (0.1, 0.05, 0.05, 0.025)]


def test_a_fresh_optimizer_replaces_the_old_one_inside_backward(tiny_cfg):
    """On the CPU the update runs inside backward; after reset_optimizer (every offline task and
    stage) each parameter is still updated exactly once per backward, at the new rate."""
    cfg = tiny_cfg(method="er").resolved()
    dataset, method = build_trial(cfg, torch.device("cpu"))
    method.reset_optimizer(0.5)
    method.reset_optimizer(0.1)
    net = method.net
    plain = copy.deepcopy(net)                     # deepcopy drops the hooks: grads stay in .grad
    x = dataset.normalize(dataset.tasks[0].x_train[:8])
    plain(x).logsumexp(1).mean().backward()
    before = [p.detach().clone() for p in net.parameters()]
    net(x).logsumexp(1).mean().backward()
    for p, old, ref in zip(net.parameters(), before, plain.parameters()):
        assert p.grad is None
        assert torch.equal(p, old if ref.grad is None else old.add(ref.grad, alpha=-0.1))


def test_a_checkpoint_holds_its_own_devices_generators_and_resumes_only_on_that_kind(tmp_path, tiny_cfg):
    cfg = tiny_cfg(seed=1)
    whole = run_trial(cfg, tmp_path / "whole")
    with pytest.raises(Crash):
        run_trial(cfg, tmp_path / "cut", progress=crash_after(1))
    path = tmp_path / "cut" / CHECKPOINT_FILE
    ckpt = torch.load(path, weights_only=False)
    assert set(ckpt["rng"]) == {"cpu", "device_type"} and ckpt["rng"]["device_type"] == "cpu"

    gpu_run = copy.deepcopy(ckpt)   # as a GPU run would have written it
    gpu_run["rng"].update(device_type="cuda", cuda=torch.zeros(16, dtype=torch.uint8))
    torch.save(gpu_run, path)
    with pytest.raises(ConfigError, match="written by a cuda run; resuming it on cpu would change"):
        run_trial(cfg, tmp_path / "cut")

    old = copy.deepcopy(ckpt)       # engine 0.1: no device kind, every visible GPU's generator
    del old["rng"]["device_type"]
    old["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 2
    torch.save(old, path)
    assert run_trial(cfg, tmp_path / "cut")["metrics"] == whole["metrics"]


def test_deterministic_is_recorded_changes_the_id_and_leaves_old_ids_alone(tmp_path, tiny_cfg):
    import hashlib, json as _json
    from engine.config import ID_WHEN_SET, RUNTIME_FIELDS
    plain = tiny_cfg().resolved()
    old_payload = {{"method": "model"}.get(k, k): v for k, v in plain.to_dict().items()   # schema-1 names
                   if k not in RUNTIME_FIELDS + tuple(ID_WHEN_SET)}
    assert plain.trial_id() == hashlib.sha1(_json.dumps(old_payload, sort_keys=True, default=str)
                                            .encode()).hexdigest()[:12]          # ids from before the field
    det = tiny_cfg(deterministic=True)
    assert det.resolved().trial_id() != plain.trial_id()
    result = run_trial(det, tmp_path / "det")
    assert result["numerics"] == {"deterministic": True, "tf32": False}
    assert result["device"] == "cpu" and result["device_uuid"] is None
    assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
    result = run_trial(tiny_cfg(seed=2), tmp_path / "plain")   # a reused process: the policy is reset
    assert result["numerics"] == {"deterministic": False, "tf32": False}
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cuda.matmul.allow_tf32
    with pytest.raises(ConfigError, match="deterministic='yes' must be true or false"):
        tiny_cfg(deterministic="yes")


@pytest.mark.parametrize("norm", ["bn", "tbbn", "adab2n", "brn", "cn", "gn", "in", "ln"])
def test_a_bf16_trial_runs_every_layer_is_recorded_and_gets_its_own_id(tmp_path, tiny_cfg, norm):
    from engine.norms import InFp32

    from conftest import TINY_SYNTH

    data = {**TINY_SYNTH, "image_size": 16}                            # IN needs maps larger than 1x1
    fp32 = tiny_cfg(norm=norm, method="derpp", data_args=data)
    bf16 = tiny_cfg(norm=norm, method="derpp", data_args=data, precision="bf16")
    assert bf16.resolved().trial_id() != fp32.resolved().trial_id()
    result = run_trial(bf16, tmp_path)
    assert result["config"]["precision"] == "bf16"
    assert all(math.isfinite(v) for v in result["metrics"]["class_il"].values())
    from engine.trainer import build_trial
    _, method = build_trial(bf16.resolved(), torch.device("cpu"))
    wrapped = [m for m in method.net.modules() if isinstance(m, InFp32)]
    assert (len(wrapped) == 0) == (norm == "bn")                      # BN's own kernel keeps fp32 stats
    with pytest.raises(ConfigError, match="precision='fp16'; choose one of: fp32, bf16"):
        tiny_cfg(precision="fp16")
