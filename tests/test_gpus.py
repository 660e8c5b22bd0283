"""Which GPUs a sweep uses: NVML answers faked at the pynvml boundary (tests/fake_nvml.py),
our code (orchestrator/gpus.py, cluster.py) and Ray real."""
import dataclasses
import os
import re
import sys

import pytest
import torch

from engine.errors import ConfigError
from orchestrator import gpus
from orchestrator.cluster import ClusterOptions, choose_gpus, session
from orchestrator.gpu_pool import GpuPool, resource_name
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
        choose_gpus()
    assert not ray.is_initialized()


def test_no_nvml_means_cpu_mode_with_a_reason(nvml):
    nvml([], init_error=True)
    chosen, why = choose_gpus()
    assert chosen == [] and why.startswith("NVML unavailable")


def test_our_own_processes_memory_does_not_make_a_gpu_busy(nvml):
    others = 4242424   # no such pid here
    nvml([FakeGpu("GPU-a", used=50 * GB, owners={os.getpid(): 40 * GB, others: 10 * GB}, **H100)])
    assert gpus.idle(gpus.probe().gpus, 0.3) == []                       # 62% used, whoever holds it
    (g,) = gpus.probe(ours={os.getpid()}).gpus
    assert g.foreign_memory == pytest.approx(10 / 80) and g.our_processes == 1 and g.processes == 2
    assert gpus.idle([g], 0.3) == [g]
    # our trials keep it at 100% utilization: that is not others' load
    busy_kernels = gpus.GpuStatus(0, "a", 0.1, 1.0, 1, uuid="GPU-a")
    assert gpus.busy_why(busy_kernels, 0.3, ours_running=True) is None
    assert gpus.busy_why(busy_kernels, 0.3) == "100% utilization by others"


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_the_pool_follows_the_gpus_between_probes(nvml):
    """Others fill GPU0 and free GPU1 mid-sweep: new trials move, ours on GPU0 go on, and each
    change is said once; nothing changes before the next probe is due."""
    a, b = FakeGpu("GPU-a", **H100), FakeGpu("GPU-b", used=60 * GB, **H100)
    nvml([a, b])
    said, clock = [], Clock()
    pool = GpuPool(gpus.probe().gpus, threshold=0.3, waitsecs=25, probe=gpus.probe, say=said.append, clock=clock)
    pool.refresh(force=True)
    assert said == ["GPUs: GPU1 (GPU-b) held back, others use 75% of its memory"]
    assert [pool.place(0.5), pool.place(0.5), pool.place(0.5)] == ["GPU-a", "GPU-a", None]   # GPU0 is full
    assert pool.line() == "GPUs GPU0 2 (100%) | held back GPU1"
    a.used, b.used = 70 * GB, 1 * GB
    clock.now = 24.0
    assert pool.place(0.5) is None and len(said) == 1                    # the reading is not due yet
    clock.now = 25.0
    assert pool.place(0.5) == "GPU-b"
    assert said[1:] == ["GPUs: GPU0 (GPU-a) held back, others use 88% of its memory; our 2 trials on it go on",
                        "GPUs: GPU1 (GPU-b) is idle again: it gets trials"]
    pool.release("GPU-a", 0.5)
    assert pool.place(0.5) == "GPU-b" and pool.place(0.5) is None         # GPU0 has room but is busy
    assert pool.line() == "GPUs GPU1 2 (100%) | held back GPU0 (1 ours)"
    nvml([], init_error=True)                                             # NVML fails for a moment
    clock.now = 60.0
    pool.release("GPU-b", 0.5)
    assert pool.place(0.5) == "GPU-b" and said[-1].startswith("GPUs: NVML reading failed")


def test_least_loaded_first_the_users_order_breaks_ties_and_shares_add_up(nvml):
    nvml([FakeGpu(f"GPU-{k}", **H100) for k in "abc"])
    pool = GpuPool(gpus.probe().gpus, threshold=0.3, waitsecs=25, probe=gpus.probe, say=print)
    assert [pool.place(0.25) for _ in range(4)] == ["GPU-a", "GPU-b", "GPU-c", "GPU-a"]
    pool.release("GPU-b", 0.25)
    assert pool.place(0.25) == "GPU-b"
    # trials of other builds ask other shares (packing by memory): a GPU takes what adds up to 1
    assert [pool.place(0.5), pool.place(0.5), pool.place(0.5), pool.place(0.5)] == ["GPU-b", "GPU-c", "GPU-a", None]
    assert [pool.place(0.25), pool.place(0.25), pool.place(0.25)] == ["GPU-b", "GPU-c", None]
    assert pool.line() == "GPUs GPU0 3 (100%), GPU1 3 (100%), GPU2 3 (100%)"


@pytest.mark.slow
def test_ray_gets_every_allowed_gpu_by_uuid_each_a_resource_of_its_own(nvml, monkeypatch):
    """The user allows GPUs 0-2 (GPU1 busy): Ray gets all three, by UUID, as GPUs and as one
    custom resource each, and a task asking for one GPU's resource runs."""
    import ray

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    monkeypatch.setenv("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "1")
    for key in ("CUDA_DEVICE_ORDER", "PYTHONPATH"):
        monkeypatch.setenv(key, os.environ.get(key, ""))   # restored after the test
    nvml([FakeGpu("GPU-aaaa-1111", **H100), FakeGpu("GPU-bbbb-2222", used=70 * GB, **H100),
          FakeGpu("GPU-cccc-3333", **H100), FakeGpu("GPU-dddd-4444", **H100)])
    with session(ClusterOptions(num_cpus=2, dashboard_port=None), print) as info:
        uuids = ["GPU-aaaa-1111", "GPU-bbbb-2222", "GPU-cccc-3333"]
        assert info.gpus == 3 and os.environ["CUDA_VISIBLE_DEVICES"] == ",".join(uuids)
        assert [g.uuid for g in info.local_gpus] == uuids
        have = ray.cluster_resources()
        assert [have.get(resource_name(u)) for u in uuids] == [1.0] * 3 and resource_name("GPU-dddd-4444") not in have

        @ray.remote(num_cpus=0, resources={resource_name("GPU-cccc-3333"): 0.5})
        def ran():
            return True

        assert ray.get(ran.remote(), timeout=60)
    assert not ray.is_initialized()


@pytest.mark.slow
def test_a_sweep_moves_to_the_gpu_others_leave_and_says_which_are_in_use(nvml, monkeypatch, tmp_path):
    """A real local Ray on two fake GPUs (NVML faked), 2 trials fit per GPU. GPU1 starts busy,
    so trials go to GPU0; once two trials have finished, another user fills GPU0 and frees
    GPU1 (NVML says so from then on): the next trials go to GPU1, each trial's process sees
    only its GPU, and the progress output says what changed and which GPUs are in use."""
    import io

    from orchestrator import sweep
    from orchestrator.cluster import gpu_pool
    from orchestrator.ledger import SweepDir
    from orchestrator.runner import RunOptions, run_sweep

    for key in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER", "PYTHONPATH", "RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO"):
        monkeypatch.setenv(key, os.environ.get(key, ""))   # restored after the test
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    trials = [dataclasses.replace(t, config=dataclasses.replace(t.config, device="cpu"))  # the GPUs are fake
              for t in sweep.expand(sweep.spec_from_flags(dict(
                  datasets=["seq-synth"], models=["sgd"], methods=["bn"], num_seeds=6, buffer_sizes=[20],
                  data_args={"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}})))]
    sd = SweepDir(tmp_path, "follow")

    def flipped() -> bool:   # another user moves from GPU1 to GPU0 once two trials have finished
        return sum(sd.is_done(t.trial_id) for t in trials) >= 2

    a = FakeGpu("GPU-aaaa", used=lambda: 70 * GB if flipped() else 1 * GB, **H100)
    b = FakeGpu("GPU-bbbb", used=lambda: 1 * GB if flipped() else 60 * GB, **H100)
    nvml([a, b])
    opts = ClusterOptions(num_cpus=2, waitsecs=0.001, dashboard_port=None)   # a fresh reading per placement
    out_stream = io.StringIO()
    with session(opts, print) as info:
        pool = gpu_pool(info, opts, 0.5, say=print)
        assert pool.held == {"GPU-bbbb": "others use 75% of its memory"}
        out = run_sweep(trials, sd, RunOptions(cpus_per_trial=0.5, gpus_per_trial=0.5, gpu_pool=pool,
                                               progress_every_s=0.0), board_stream=out_stream)
    assert sorted(out.finished) == sorted(t.trial_id for t in trials) and not out.failed
    seen = [out.last_results[t.trial_id]["cuda_visible_devices"] for t in trials]   # in plan order
    assert seen[:2] == ["GPU-aaaa"] * 2 and seen[-1] == "GPU-bbbb" and set(seen) == {"GPU-aaaa", "GPU-bbbb"}
    assert seen.count("GPU-aaaa") <= 4   # the 2 finished at the flip and at most 2 placed then
    text = out_stream.getvalue()
    assert "GPUs: GPU0 (GPU-aaaa) held back, others use 88% of its memory" in text
    assert "GPUs: GPU1 (GPU-bbbb) is idle again: it gets trials" in text
    assert re.search(r"\| GPUs GPU0 \d \(\d+%\) \| held back GPU1", text)   # the progress line, before
    assert re.search(r"\| GPUs GPU1 \d \(\d+%\) \| held back GPU0", text)   # and after
    assert pool.ours == {"GPU-aaaa": 0, "GPU-bbbb": 0} and pool.load == {"GPU-aaaa": 0.0, "GPU-bbbb": 0.0}
