"""Which GPUs a sweep uses: NVML answers faked at the pynvml boundary (tests/fake_nvml.py),
our code (orchestrator/gpus.py, cluster.py) and Ray real."""
import os
import sys

import pytest
import torch

from engine.errors import ConfigError
from orchestrator import gpus
from orchestrator.cluster import ClusterOptions, choose_gpus, session
from tests.fake_nvml import GB, FakeGpu, fake_pynvml

H100 = dict(name="NVIDIA H100 80GB HBM3", capability=(9, 0))


@pytest.fixture
def nvml(monkeypatch):
    """nvml(gpus, **kw): NVML reports these GPUs for the rest of the test."""
    def install(devices, **kw):
        module = fake_pynvml(devices, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", module)
        return module
    return install


def four_gpus():
    return [FakeGpu("GPU-aaaa-1111", **H100), FakeGpu("GPU-bbbb-2222", used=70 * GB, **H100),
            FakeGpu("GPU-bbbc-3333", utilization=95, **H100), FakeGpu("GPU-dddd-4444", **H100)]


def test_every_gpu_is_read_with_its_uuid_capability_and_the_driver(nvml):
    module = nvml(four_gpus(), driver_cuda=13010)
    reading = gpus.probe()
    assert [g.uuid for g in reading.gpus] == ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-bbbc-3333", "GPU-dddd-4444"]
    assert [g.index for g in reading.gpus] == [0, 1, 2, 3]
    assert reading.gpus[1].memory_used == pytest.approx(70 / 80) and reading.gpus[2].utilization == 0.95
    assert reading.gpus[0].capability == (9, 0) and reading.driver_cuda == (13, 1)
    assert [g.label for g in gpus.idle(reading.gpus, 0.3)] == ["GPU0", "GPU3"]
    assert module.state["init"] == 0   # NVML is shut down after every probe


def test_unsupported_utilization_is_judged_by_memory_never_dropped(nvml):
    nvml([FakeGpu("GPU-a", utilization=None), FakeGpu("GPU-b", utilization=None, used=60 * GB)])
    reading = gpus.probe()
    assert [g.utilization for g in reading.gpus] == [None, None]
    assert [g.uuid for g in gpus.idle(reading.gpus, 0.3)] == ["GPU-a"]
    assert "judged by memory" in reading.gpus[0].describe()


def test_a_mig_gpu_is_used_through_its_instances(nvml):
    instances = [FakeGpu(f"MIG-{k}", name="", total=10 * GB, used=(8 * GB if k == 1 else 0), utilization=None)
                 for k in range(3)]
    nvml([FakeGpu("GPU-whole", **H100), FakeGpu("GPU-migged", mig=instances, **H100)])
    reading = gpus.probe()
    assert [(g.label, g.uuid) for g in reading.gpus] == [
        ("GPU0", "GPU-whole"), ("GPU1/MIG0", "MIG-0"), ("GPU1/MIG1", "MIG-1"), ("GPU1/MIG2", "MIG-2")]
    assert reading.gpus[1].name == H100["name"] and reading.gpus[1].memory_total == 10 * GB
    assert [g.uuid for g in gpus.idle(reading.gpus, 0.3)] == ["GPU-whole", "MIG-0", "MIG-2"]


@pytest.mark.parametrize("visible, expected", [
    (None, ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-bbbc-3333", "GPU-dddd-4444"]),
    ("3,0", ["GPU-dddd-4444", "GPU-aaaa-1111"]),                  # indices, in the user's order
    ("GPU-dddd-4444", ["GPU-dddd-4444"]),                          # a UUID
    ("GPU-dd,GPU-aa", ["GPU-dddd-4444", "GPU-aaaa-1111"]),         # unique UUID prefixes
    ("0,7,3", ["GPU-aaaa-1111"]),                                  # CUDA stops at the first unknown entry
    ("GPU-bbb", []),                                               # an ambiguous prefix names nothing
    ("", []),
])
def test_the_users_cuda_visible_devices_limits_the_gpus(nvml, visible, expected):
    nvml(four_gpus())
    reading = gpus.probe(visible)
    assert [g.uuid for g in reading.gpus] == expected
    if not expected:
        assert "allows none of the 4 GPUs" in reading.why_none


def test_gpus_this_torch_build_cannot_run_are_refused_in_one_line(nvml):
    arch, cuda = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], "13.0"   # torch 2.14.1+cu130
    nvml([FakeGpu("GPU-a", **H100), FakeGpu("GPU-v100", name="Tesla V100-SXM2-32GB", capability=(7, 0))])
    why = gpus.check_runnable(gpus.probe(), arch, cuda)
    assert why.startswith("GPU1 Tesla V100-SXM2-32GB (sm_70) cannot run this torch build") and "\n" not in why
    assert "CUDA_VISIBLE_DEVICES" in why
    assert gpus.check_runnable(gpus.probe("0"), arch, cuda) is None            # the user left it out
    nvml([FakeGpu("GPU-a6000", name="NVIDIA RTX A6000", capability=(8, 6)),
          FakeGpu("GPU-l40", name="NVIDIA L40", capability=(8, 9))])            # sm_86 kernels run on 8.9
    assert gpus.check_runnable(gpus.probe(), arch, cuda) is None
    assert gpus.check_runnable(gpus.probe(), ["sm_80", "compute_80"], cuda) is None   # PTX
    nvml([FakeGpu("GPU-a", **H100)], driver_cuda=12040)
    assert "driver supports CUDA up to 12.4 but this torch build needs CUDA 13.0" in \
        gpus.check_runnable(gpus.probe(), arch, cuda)
    assert "no CUDA" in gpus.check_runnable(gpus.probe(), [], None)
    nvml([], driver_cuda=12040)
    assert gpus.check_runnable(gpus.probe(), arch, cuda) is None                 # no GPU: CPU trials


def test_a_gpu_the_build_cannot_run_stops_the_launch_before_ray(nvml, monkeypatch):
    import ray

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    nvml([FakeGpu("GPU-p100", name="Tesla P100-PCIE-16GB", capability=(6, 0))])
    with pytest.raises(ConfigError, match="GPU0 Tesla P100-PCIE-16GB \\(sm_60\\) cannot run"):
        choose_gpus(ClusterOptions(), print)
    assert not ray.is_initialized()


def test_waits_for_an_idle_gpu_and_says_so_once():
    busy = gpus.Probe([gpus.GpuStatus(0, "a", 0.9, 0.9, 2, uuid="GPU-a")])
    free = gpus.Probe([gpus.GpuStatus(0, "a", 0.0, 0.0, 0, uuid="GPU-a")])
    answers, said, slept = iter([busy, busy, free]), [], []
    chosen, why = gpus.wait_for_idle(0.3, 7, said.append, probe_fn=lambda: next(answers), sleep=slept.append)
    assert [g.uuid for g in chosen] == ["GPU-a"] and why is None and slept == [7, 7]
    assert sum("busy" in line for line in said) == 1


def test_no_nvml_means_cpu_mode_with_a_reason(nvml):
    nvml([], init_error=True)
    chosen, why = gpus.wait_for_idle(0.3, 1, print)
    assert chosen == [] and why.startswith("NVML unavailable")


@pytest.mark.slow
def test_trials_get_the_idle_allowed_gpus_by_uuid_from_a_real_ray(nvml, monkeypatch):
    """The user allows GPUs 0-2; GPU1 is busy: Ray gets GPU0 and GPU2, by UUID, one per task."""
    import ray

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
    for key in ("CUDA_DEVICE_ORDER", "PYTHONPATH"):
        monkeypatch.setenv(key, os.environ.get(key, ""))   # restored after the test
    nvml([FakeGpu("GPU-aaaa-1111", **H100), FakeGpu("GPU-bbbb-2222", used=70 * GB, **H100),
          FakeGpu("GPU-cccc-3333", **H100), FakeGpu("GPU-dddd-4444", **H100)])
    said = []
    with session(ClusterOptions(num_cpus=2, dashboard_port=None), said.append) as info:
        assert info.gpus == 2 and os.environ["CUDA_VISIBLE_DEVICES"] == "GPU-aaaa-1111,GPU-cccc-3333"

        @ray.remote(num_gpus=1, num_cpus=0)
        def visible():
            return os.environ["CUDA_VISIBLE_DEVICES"]

        seen = ray.get([visible.remote(), visible.remote()])
    assert sorted(seen) == ["GPU-aaaa-1111", "GPU-cccc-3333"]
    assert not ray.is_initialized()
