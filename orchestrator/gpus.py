"""Which GPUs a sweep may use and which are idle, read from NVML (package nvidia-ml-py, module pynvml).

Ray counts GPUs but does not see other users' load, so the launcher reads it here: before Ray
starts (which GPUs to give Ray, by UUID) and while the sweep runs (gpu_pool.py: which GPU gets
the next trial).
- The user's own CUDA_VISIBLE_DEVICES (indices in PCI bus order, or UUIDs and their prefixes, as
  CUDA takes them) limits the GPUs considered at all.
- A GPU is idle when both the fraction of its memory others use and its utilization are below
  the threshold (run.py looked at memory only; a GPU at 100% utilization with little memory is
  not idle). Our own processes' memory is told apart by pid (busy_why).
  Where NVML cannot report utilization (MIG instances, some boards), memory alone decides, and
  the GPU says so in its description: a GPU is never dropped because one query is unsupported.
- A GPU in MIG mode is used through its MIG instances, each a device of its own (its MIG UUID).
- GPUs this torch build has no kernels for, or a driver older than its CUDA, are refused before
  Ray starts (`check_runnable`), so no trial is handed a GPU it cannot use.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Container, Iterable

from engine.device import has_kernels


@dataclass(frozen=True)
class GpuStatus:
    index: int                        # NVML index = PCI bus order (a MIG instance: its GPU's)
    name: str
    memory_used: float                # fraction of total memory in use
    utilization: float | None         # fraction of time a kernel ran; None: NVML cannot tell
    processes: int                    # compute processes running on it (ours included)
    uuid: str = ""                    # GPU-... or MIG-...: what CUDA_VISIBLE_DEVICES names
    capability: tuple[int, int] | None = None   # CUDA compute capability (major, minor)
    mig: int | None = None            # MIG instance number on its GPU, None for a whole GPU
    memory_total: int = 0             # bytes
    ours_memory: float = 0.0          # fraction of total memory held by our own processes
    our_processes: int = 0            # of `processes`, those of this launcher's process tree

    @property
    def foreign_memory(self) -> float:
        """Memory used by others (other users, other jobs): what makes a GPU busy for us."""
        return max(self.memory_used - self.ours_memory, 0.0)

    @property
    def label(self) -> str:
        return f"GPU{self.index}" + (f"/MIG{self.mig}" if self.mig is not None else "")

    def describe(self) -> str:
        util = "n/a (judged by memory)" if self.utilization is None else f"{self.utilization:.0%}"
        return (f"{self.label} {self.name} ({self.uuid}): memory {self.memory_used:.0%}, "
                f"utilization {util}, {self.processes} processes")


@dataclass(frozen=True)
class Probe:
    """One NVML reading: the GPUs the user allows, the driver's CUDA version, or why none."""
    gpus: list[GpuStatus]
    why_none: str | None = None
    driver_cuda: tuple[int, int] | None = None     # highest CUDA version the driver supports


def probe(visible: str | None = None, ours: Container[int] = ()) -> Probe:
    """Every GPU NVML sees (MIG instances in place of their GPU), limited to `visible`
    (the user's CUDA_VISIBLE_DEVICES; None: no limit). `ours`: the pids of our own processes
    (Ray workers), whose memory is told apart from others'."""
    try:
        import pynvml
    except ImportError:
        return Probe([], "nvidia-ml-py is not installed")
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        return Probe([], f"NVML unavailable ({exc})")
    try:
        out: list[GpuStatus] = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            cap = tuple(pynvml.nvmlDeviceGetCudaComputeCapability(h))
            instances = _mig_instances(pynvml, h)
            if instances is None:
                out.append(_status(pynvml, h, i, _text(pynvml.nvmlDeviceGetName(h)), cap, None, ours))
            else:
                name = _text(pynvml.nvmlDeviceGetName(h))
                out += [_status(pynvml, m, i, name, cap, k, ours) for k, m in instances]
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
        chosen = select_visible(out, visible)
        return Probe(chosen, None if chosen else _why_empty(out, visible), (cuda // 1000, cuda % 1000 // 10))
    except pynvml.NVMLError as exc:
        return Probe([], f"NVML query failed ({exc})")
    finally:
        pynvml.nvmlShutdown()


def _status(pynvml, handle, index: int, name: str, cap, mig: int | None, ours: Container[int]) -> GpuStatus:
    mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
    total = max(mem.total, 1)
    try:
        util: float | None = pynvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0
    except pynvml.NVMLError:   # MIG instances and some boards: not supported
        util = None
    try:
        procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLError:
        procs = []
    mine = [p for p in procs if p.pid in ours]
    # usedGpuMemory is None where NVML cannot tell (some containers): counted as others'
    ours_used = sum(p.usedGpuMemory or 0 for p in mine)
    return GpuStatus(index, name, mem.used / total, util, len(procs),
                     uuid=_text(pynvml.nvmlDeviceGetUUID(handle)), capability=cap, mig=mig,
                     memory_total=int(mem.total), ours_memory=min(ours_used / total, 1.0),
                     our_processes=len(mine))


def _mig_instances(pynvml, handle) -> list[tuple[int, object]] | None:
    """The MIG instances of a GPU in MIG mode, None for a GPU used whole."""
    try:
        current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
    except pynvml.NVMLError:   # not a MIG-capable GPU
        return None
    if current != pynvml.NVML_DEVICE_MIG_ENABLE:
        return None
    out = []
    for k in range(pynvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
        try:
            out.append((k, pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, k)))
        except pynvml.NVMLError:   # an empty slot
            continue
    return out


def select_visible(gpus: list[GpuStatus], visible: str | None) -> list[GpuStatus]:
    """The GPUs CUDA_VISIBLE_DEVICES allows, in its order. As in CUDA, entries are indices
    (PCI bus order here: the launcher sets CUDA_DEVICE_ORDER=PCI_BUS_ID) or UUIDs or unique
    UUID prefixes, and the list ends at the first entry that names no device."""
    if visible is None:
        return list(gpus)
    chosen: list[GpuStatus] = []
    for entry in (e.strip() for e in visible.split(",")):
        if entry.isdigit():   # a GPU in MIG mode: the index names all its instances
            match = [g for g in gpus if g.index == int(entry)]
        else:
            match = [g for g in gpus if g.uuid == entry] or [g for g in gpus if entry and g.uuid.startswith(entry)]
            if len(match) > 1:   # an ambiguous prefix names no device
                match = []
        if not match:
            break
        chosen += [g for g in match if g not in chosen]
    return chosen


def _why_empty(all_gpus: list[GpuStatus], visible: str | None) -> str:
    if not all_gpus:
        return "no GPU found"
    return f"CUDA_VISIBLE_DEVICES={visible!r} allows none of the {len(all_gpus)} GPUs NVML sees"


def busy_why(g: GpuStatus, threshold: float, ours_running: bool = False) -> str | None:
    """Why others have made this GPU busy (one phrase), or None when it is idle for us.

    Others' memory decides (ours is subtracted). Utilization counts only while none of our
    trials run on the GPU: NVML cannot tell whose kernels keep it busy.
    """
    if g.foreign_memory >= threshold:
        return f"others use {g.foreign_memory:.0%} of its memory"
    if not ours_running and g.utilization is not None and g.utilization >= threshold:
        return f"{g.utilization:.0%} utilization by others"
    return None


def idle(gpus: Iterable[GpuStatus], threshold: float) -> list[GpuStatus]:
    return [g for g in gpus if busy_why(g, threshold) is None]


def check_runnable(reading: Probe, arch_list: list[str], build_cuda: str | None) -> str | None:
    """Why this torch build cannot run on these GPUs (one line), or None.

    `arch_list` is torch.cuda.get_arch_list(), `build_cuda` torch.version.cuda. Kernels are
    matched by engine.device.has_kernels (a trial checks its GPU the same way); the driver must
    support the build's CUDA major version.
    """
    if not reading.gpus:
        return None
    if build_cuda is None:
        return "this torch build has no CUDA; install a CUDA build of torch or pass --gpus_per_trial 0"
    need = tuple(int(p) for p in build_cuda.split(".")[:2])
    if reading.driver_cuda is not None and reading.driver_cuda[0] < need[0]:
        return (f"the NVIDIA driver supports CUDA up to {reading.driver_cuda[0]}.{reading.driver_cuda[1]} "
                f"but this torch build needs CUDA {build_cuda}: update the driver, install a torch build "
                "for it, or pass --gpus_per_trial 0")
    bad = [g for g in reading.gpus if g.capability is not None and not has_kernels(g.capability, arch_list)]
    if bad:
        g = bad[0]
        return (f"{g.label} {g.name} (sm_{g.capability[0]}{g.capability[1]}) cannot run this torch build "
                f"(kernels for {', '.join(arch_list) or 'none'}): leave it out with CUDA_VISIBLE_DEVICES, "
                "install a torch build for it, or pass --gpus_per_trial 0")
    return None


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
