"""Operations per training step, BN against TBBN and AdaB2N (issue 17, point 4).

One online DER++ step (10 current rows + 2 x 10 replayed rows, three forwards) of mammoth's
ResNet-18 on 32x32x3 inputs, at task 5 of 5 with a full buffer, so TBBN splits (r = 2: 10 current, 20 memory rows, t = 4)
and AdaB2N weighs rows by task. Counted: every ATen
operation that reaches the CPU backend and is not a view (a view launches no kernel), through
a TorchDispatchMode, i.e. what a GPU would launch as kernels give or take fusion inside one op.

`--compile` counts the same step with the training forward under torch.compile (--compile), from
the profiler: inductor's fused kernels plus every outermost ATen operation that is not a view
(those outside the graphs, and the ones the graphs call: convolutions), the eager step counted the
same way beside it. Inductor's CPU kernels, not CUDA's, but fused by the same scheduler.

    python benchmarks/kernel_count.py [--norms bn tbbn adab2n] [--compile]
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.config import TrialConfig  # noqa: E402
from engine.trainer import build_trial  # noqa: E402

DATA = {"n_classes": 10, "channels": 3, "image_size": 32, "train_per_class": 12, "test_per_class": 2}


class CountOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not func.is_view:
            self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def step_driver(norm: str, device: torch.device, dataset=None, task: int = 4, compile: bool = False):
    """A DER++ method at `task` with a full buffer, and the batch of its next step."""
    cfg = TrialConfig(dataset="seq-synth", data_args=dict(DATA), method="derpp", norm=norm, backbone="resnet18",
                      n_tasks=5, buffer_size=40, device=str(device), compile=compile).resolved()
    dataset, method = build_trial(cfg, device, dataset)
    for t in range(task + 1):
        method.begin_task(t)
        x, y = dataset.tasks[t].x_train, dataset.tasks[t].y_train
        for start in range(0, x.shape[0] - 9, 10):
            method.observe(x[start:start + 10], y[start:start + 10])
    x, y = dataset.tasks[task].x_train[:10], dataset.tasks[task].y_train[:10]
    return method, x, y


def count_step(norm: str) -> Counter[str]:
    torch.manual_seed(0)
    method, x, y = step_driver(norm, torch.device("cpu"))
    with CountOps() as counter:
        method.observe(x, y)
    return counter.ops


@functools.lru_cache(maxsize=None)
def is_view(name: str) -> bool:
    packet = getattr(torch.ops.aten, name.split("::", 1)[1], None)
    return packet is not None and any(getattr(packet, o).is_view for o in packet.overloads())


def profiled_ops(events) -> Counter[str]:
    """Inductor kernels and outermost non-view ATen operations among the profiler's events."""
    ops: Counter[str] = Counter()
    for e in events:
        kernel = "cpp_fused" in e.name
        if not kernel and not (e.name.startswith("aten::") and not is_view(e.name)):
            continue
        parent = e.cpu_parent
        while parent is not None and not (parent.name.startswith("aten::") and not is_view(parent.name)):
            parent = parent.cpu_parent
        if parent is None:
            ops["inductor kernel" if kernel else e.name] += 1
    return ops


def count_profiled_step(norm: str, compile: bool) -> tuple[Counter[str], float]:
    """The step's operations, and its time (ms, best of 5 unprofiled steps)."""
    import torch._inductor.config
    from torch.profiler import ProfilerActivity, profile
    torch._inductor.config.cpp.enable_kernel_profile = True   # a profiler event per inductor kernel
    torch.manual_seed(0)
    method, x, y = step_driver(norm, torch.device("cpu"), compile=compile)
    for _ in range(2):   # the compiled graphs of this layout, made before counting
        method.observe(x, y)
    times = []
    for _ in range(5):
        start = time.perf_counter()
        method.observe(x, y)
        times.append(1000 * (time.perf_counter() - start))
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        method.observe(x, y)
    return profiled_ops(prof.events()), min(times)


def compiled_table(norms: list[str]) -> None:
    rows = {n: (count_profiled_step(n, False), count_profiled_step(n, True)) for n in norms}
    base_e, base_c = (sum(c.values()) for c, _ in rows.get("bn", next(iter(rows.values()))))
    print("| layer | eager ops (profiler) | vs BN | compiled ops | vs BN compiled | eager ms/step | compiled ms/step "
          "| compiled: most frequent |")
    print("|---|---|---|---|---|---|---|---|")
    for n, ((eager, ms_e), (comp, ms_c)) in rows.items():
        e, c = sum(eager.values()), sum(comp.values())
        top = ", ".join(f"{k.split('::')[-1]} {v}" for k, v in comp.most_common(6))
        print(f"| {n} | {e} | {e / base_e:.2f}x | {c} | {c / base_c:.2f}x | {ms_e:.0f} | {ms_c:.0f} | {top} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norms", nargs="+", default=["bn", "tbbn", "adab2n"])
    p.add_argument("--top", type=int, default=8, help="most frequent operations shown per layer")
    p.add_argument("--compile", action="store_true", help="also count the step with the forward compiled")
    args = p.parse_args()
    torch.set_num_threads(1)
    if args.compile:
        compiled_table(args.norms)
        return 0
    counts = {n: count_step(n) for n in args.norms}
    base = sum(counts.get("bn", next(iter(counts.values()))).values())
    print("| layer | ops per DER++ step | vs BN | most frequent |")
    print("|---|---|---|---|")
    for n, ops in counts.items():
        top = ", ".join(f"{k.split('.')[-1]} {v}" for k, v in ops.most_common(args.top))
        print(f"| {n} | {sum(ops.values())} | {sum(ops.values()) / base:.2f}x | {top} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
