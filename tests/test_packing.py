"""Packing by memory: the estimate of a trial's peak GPU memory (engine/memory.py), the GPU
share it gives each trial (orchestrator/packing.py) and the plan --dry_run prints, with NVML
answers faked at the pynvml boundary."""
import sys

import pytest
import torch

import launcher
from engine.config import TrialConfig
from engine.memory import build_on_meta, estimate, saved_activations
from engine.trainer import build_trial
from orchestrator import gpus, packing, sweep
from tests.fake_nvml import GB, FakeGpu, fake_pynvml

H100 = dict(name="NVIDIA H100 80GB HBM3", capability=(9, 0), total=80 * GB)


@pytest.mark.parametrize("norm", ["bn", "tbbn", "adab2n"])
def test_activations_counted_on_the_meta_device_are_those_of_a_real_forward(norm):
    """The meta count (no memory) is what autograd keeps in a real CPU forward of the same net."""
    cfg = TrialConfig(dataset="seq-synth", method="derpp", norm=norm).resolved()
    _, on_meta = build_on_meta(cfg)
    dataset, real = build_trial(cfg, torch.device("cpu"))
    shape = dataset.input_shape
    assert saved_activations(on_meta.net, 12, shape) == saved_activations(real.net, 12, shape, torch.device("cpu"))


def test_the_estimate_counts_data_model_buffer_and_a_batch_that_grows_with_bs():
    cifar = estimate(TrialConfig(dataset="seq-cifar10", method="derpp", norm="bn", buffer_size=500))
    assert cifar.data == 60_000 * (3 * 32 * 32 + 8)                  # uint8 images + int64 labels
    assert cifar.buffer == 500 * (3 * 32 * 32 + 4 * 10 + 16)
    assert estimate(TrialConfig(dataset="seq-cifar10", method="derpp", norm="bn", bs=128)).activations > cifar.activations
    # ImageNet-100's 19 GiB of images stay on the host: labels + one task's training images
    big = estimate(TrialConfig(dataset="seq-imagenet100", method="derpp", norm="bn"))
    assert big.data == 135_000 * 8 + 13_000 * 3 * 224 * 224 and big.total > cifar.total
    joint = estimate(TrialConfig(dataset="seq-imagenet100", method="joint", norm="bn", setting="offline"))
    assert joint.data == 135_000 * 8 + 130_000 * 3 * 224 * 224   # it trains on every seen task
    # methods that keep the old model hold a fourth copy of the weights
    for model, copies in (("lucir", 4), ("finetune", 3)):
        cfg = TrialConfig(dataset="seq-cifar100", method=model, setting="offline")
        weights = sum(p.numel() * 4 for p in build_on_meta(cfg.resolved())[1].net.parameters())
        assert estimate(cfg).model == copies * weights


def status(uuid, total, used=0.0, index=0):
    return gpus.GpuStatus(index, "gpu", used, 0.0, 0, uuid=uuid, memory_total=total)


def test_each_build_gets_the_share_that_fits_its_estimate_in_the_smallest_gpus_budget():
    trials = sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-cifar10", "seq-imagenet100"], models=["derpp"], methods=["bn"], num_seeds=2,
        buffer_sizes=[500])))
    two = [status("GPU-big", 80 * GB), status("GPU-small", 40 * GB, index=1)]
    packed = packing.pack(trials, two, threshold=0.3)
    budget = 0.3 * 40 * GB
    for t in trials:
        per_gpu = max(1, int(budget // estimate(t.config).total))
        assert packed.shares[t.trial_id] == packing.share_of(per_gpu)
        assert per_gpu * packed.shares[t.trial_id] <= 1   # Ray's accounting lets per_gpu of them in
    cifar = [packed.shares[t.trial_id] for t in trials if t.config.dataset == "seq-cifar10"]
    assert len(set(cifar)) == 1 and cifar[0] < 0.2
    text = "\n".join(packed.lines)
    assert "under 30% of 40.00 GiB" in text and "trials per GPU: seq-imagenet100 derpp bn bs 10 buffer 500" in text
    tiny = packing.pack(trials, [status("GPU-tiny", 4 * GB)], threshold=0.3)   # 1.2 GiB: nothing fits
    assert set(tiny.shares.values()) == {1.0} and "more than the budget: 1 per GPU" in "\n".join(tiny.lines)
    assert packing.share_of(7) * 7 <= 1 and packing.share_of(3) == 0.3333


def test_dry_run_prints_the_gpu_plan_from_nvml(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([
        FakeGpu("GPU-a", **H100), FakeGpu("GPU-b", used=60 * GB, **H100), FakeGpu("GPU-c", **H100)]))
    args = ["--datasets", "seq-cifar10", "--models", "derpp", "--methods", "bn", "--buffer_sizes", "500",
            "--num_seeds", "1", "--results_dir", str(tmp_path), "--dry_run"]
    assert launcher.main(args) == 0
    out = capsys.readouterr().out
    (cfg,) = [t.config for t in sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-cifar10"], models=["derpp"], methods=["bn"], num_seeds=1, buffer_sizes=[500])))]
    per_gpu = int(0.3 * 80 * GB // estimate(cfg).total)
    assert f"GPU plan: {per_gpu} trials per GPU on 2 idle GPUs (GPU0, GPU2)" in out
    assert "GPU1 (GPU-b) held back while others use 75% of its memory" in out
    assert launcher.main(args + ["--gpus_per_trial", "0.25"]) == 0
    assert "GPU plan: 4 trials per GPU (--gpus_per_trial 0.25) on 2 idle GPUs (GPU0, GPU2)" in capsys.readouterr().out
    assert not list(tmp_path.iterdir())   # a dry run writes nothing


def test_images_stay_on_the_host_only_on_a_gpu_and_only_when_large():
    from engine.datasets.base import HOST_IMAGES_BYTES, images_on_host

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert images_on_host(HOST_IMAGES_BYTES + 1, cuda) and not images_on_host(HOST_IMAGES_BYTES, cuda)
    assert not images_on_host(100 * GB, cpu)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here: the host-images path needs one")
def test_a_trial_with_its_images_on_the_host_learns_as_with_them_on_the_gpu(tmp_path, monkeypatch):
    from engine.datasets import base
    from engine.trainer import run_trial

    cfg = TrialConfig(dataset="seq-synth", method="derpp", norm="tbbn", device="cuda", deterministic=True)
    on_gpu = run_trial(cfg, tmp_path / "gpu")
    monkeypatch.setattr(base, "HOST_IMAGES_BYTES", 0)
    dataset, _ = build_trial(cfg.resolved(), torch.device("cuda"))
    assert dataset.tasks[0].x_train.device.type == "cpu" and dataset.tasks[0].x_train.is_pinned()
    assert dataset.tasks[0].y_train.device.type == "cuda"
    on_host = run_trial(cfg, tmp_path / "host")
    assert on_host["metrics"] == on_gpu["metrics"]
