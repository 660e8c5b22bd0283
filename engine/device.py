"""Where a trial's tensors live and how they run there: the device, the network's memory format,
whether the optimizer updates inside backward, and the chunk size of eval-mode forwards."""
from __future__ import annotations

import contextlib
import os

import torch
from torch import nn

from engine.errors import ConfigError

# oneDNN's CPU convolutions run ~10% faster (training and inference, ResNet-18 at 32 px,
# benchmarks/RESULTS.md) on channels-last (NHWC) tensors; CUDA keeps the default NCHW.
MEMORY_FORMATS = {"cpu": torch.channels_last}
# Optimizer updates applied inside backward, parameter by parameter (engine/optim.py): on the CPU
# that keeps the gradients from piling up beside the activations (~45 MB less peak, ResNet-18, 30
# rows); on CUDA memory is plentiful and one foreach update beats ~60 small ones per step.
UPDATE_IN_BACKWARD = {"cpu": True}
# Rows per eval-mode forward. CPU: chunks of a training batch's size run as fast as larger ones
# (cache) and reuse the memory the training steps freed, so evaluation adds nothing to the peak.
EVAL_CHUNKS = {"cpu": 32, "cuda": 1024}


def resolve_device(name: str) -> torch.device:
    """`auto`: CUDA when it works, else the CPU. A named CUDA device that cannot run this torch
    build is a one-line ConfigError saying why (a trial given a GPU never falls back silently)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        why = cuda_unusable(device)
        if why:
            raise ConfigError(f"device={name!r} cannot be used: {why}; use --device cpu or auto")
    return device


def cuda_unusable(device: torch.device) -> str | None:
    """Why CUDA cannot run this build's kernels on `device` (one line), or None."""
    if not torch.cuda.is_available():
        try:
            torch.cuda.init()   # raises with the driver's own reason (too old, no device, ...)
        except Exception as exc:   # noqa: BLE001 - any reason is reported, none is hidden
            return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return "no CUDA device is visible"
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        return f"only {torch.cuda.device_count()} CUDA device(s) are visible"
    cap = torch.cuda.get_device_capability(index)
    if not has_kernels(cap, torch.cuda.get_arch_list()):
        return (f"{torch.cuda.get_device_name(index)} (sm_{cap[0]}{cap[1]}) has no kernels in this torch "
                f"build ({', '.join(torch.cuda.get_arch_list())})")
    return None


def has_kernels(cap: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build with `arch_list` (torch.cuda.get_arch_list()) runs on capability `cap`:
    a kernel for sm_XY runs on X.Y' with Y' >= Y; PTX for compute_XY on any capability >= X.Y."""
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit() or len(digits) < 2:
            continue
        major, minor = int(digits[:-1]), int(digits[-1])
        if (kind == "sm" and major == cap[0] and minor <= cap[1]) or (kind == "compute" and (major, minor) <= tuple(cap)):
            return True
    return False


def place(net: nn.Module, device: torch.device) -> nn.Module:
    """Move `net` to `device` in the memory format its convolutions are fastest in there; the
    convolutions then produce that format and the layers after them keep it."""
    return net.to(device=device, memory_format=MEMORY_FORMATS.get(device.type, torch.contiguous_format))


def autocast(device: torch.device, precision: str):
    """The training forward's numeric context: bf16 autocast, or nothing (fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 is faster than fp32 here: on a CPU only with AMX or AVX-512-BF16 (on AVX2-only
    CPUs it is emulated and slower); on a GPU when the GPU has bf16 units (Ampere and newer)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    return bool({"amx_bf16", "avx512_bf16"} & cpu_flags())


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((set(line.split(":", 1)[1].split()) for line in fh if line.startswith("flags")), set())
    except OSError:   # not Linux: say nothing is there
        return set()


def compiled(forward, device: torch.device):
    """`forward` under torch.compile (--compile): inductor kernels; on CUDA mode "reduce-overhead",
    CUDA graphs, which fit because a task's batch shapes are fixed (`dynamic=False`: one graph
    per batch layout, i.e. rows and the norm layers' plans, `LayoutNorm.plan`; not one per task)."""
    return torch.compile(forward, dynamic=False, mode="reduce-overhead" if device.type == "cuda" else None)


def update_in_backward(device: torch.device) -> bool:
    return UPDATE_IN_BACKWARD.get(device.type, False)


def eval_chunk(device: torch.device, input_shape: tuple[int, ...] = (3, 32, 32)) -> int:
    """Rows per no-grad forward. On a GPU the chunk shrinks with the image area, so that
    evaluating at 224 px keeps the memory of 32 px (at least 32 rows)."""
    chunk = EVAL_CHUNKS.get(device.type, 1024)
    if device.type == "cuda":
        area = input_shape[-1] * input_shape[-2]
        chunk = max(32, chunk * 32 * 32 // max(area, 32 * 32))
    return chunk


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return "cpu"


def device_uuid(device: torch.device) -> str | None:
    """The GPU's UUID as NVML and CUDA_VISIBLE_DEVICES write it (GPU-...): the index alone
    names another GPU under another CUDA_VISIBLE_DEVICES. None on the CPU."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    uuid = str(torch.cuda.get_device_properties(index).uuid)
    return uuid if uuid.startswith(("GPU-", "MIG-")) else f"GPU-{uuid}"


def set_numerics(deterministic: bool) -> dict:
    """The numeric policy of one trial, set every trial (a reused worker may run both kinds),
    returned for result.json. TF32 is off in both: fp32 means fp32 on Ampere and newer too.
    deterministic: cuDNN and torch pick deterministic kernels; an op that has none on CUDA
    (adaptive_avg_pool2d's backward, in every ResNet here) stays as it is, and torch's warning
    says so in the trial's log. Bit-identical reruns are promised on the CPU only."""
    if deterministic:  # cuBLAS reads it when its first handle is made, i.e. after this
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = False
    if deterministic or torch.are_deterministic_algorithms_enabled():  # the setter imports dynamo
        torch.use_deterministic_algorithms(deterministic, warn_only=True)   # (+150 MB): only on need
    return {"deterministic": deterministic, "tf32": False}


def rng_state(device: torch.device) -> dict:
    """The generators a trial draws from: the CPU's and its own device's. Never every visible
    GPU's: a resumed trial may see other GPUs, or another number of them."""
    state = {"cpu": torch.get_rng_state(), "device_type": device.type}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict, device: torch.device) -> None:
    """Put `rng_state`'s generators back on `device`: any GPU for a GPU run. A checkpoint of a
    CPU run resumed on a GPU (or the reverse) is refused: the trial's numbers would change."""
    saved = state.get("device_type")   # absent in checkpoints of engine 0.1: not checked
    if saved is not None and saved != device.type:
        raise ConfigError(f"the checkpoint was written by a {saved} run; resuming it on {device.type} "
                          f"would change its numbers: run it on {saved} (--device), or delete "
                          "checkpoint.pt to start over")
    torch.set_rng_state(state["cpu"])
    cuda = state.get("cuda")
    if device.type == "cuda" and cuda is not None:
        if isinstance(cuda, (list, tuple)):   # engine 0.1 saved every visible GPU's; the trial used the first
            cuda = cuda[0]
        torch.cuda.set_rng_state(cuda, device)
