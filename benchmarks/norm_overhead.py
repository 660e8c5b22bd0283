"""Training-step cost of every normalization layer relative to BN (CPU).

Whole step = set the layout, forward, cross-entropy (+ the layers' aux loss), backward, SGD step,
on ResNet-18 (mammoth's, nf=64) placed as the engine places it on the CPU (channels-last,
engine/device.py), 32x32x3 inputs, 10 classes. Two batches, each at t = 1..9:
the online DER++ batch (10 current + 2 x 10 memory rows) and the offline TBBN batch (48 + 16).
Memory rows carry task ids spread over the tasks <= t. Every layer sees the same batches; the
layers whose cost depends on t (TBBN, AdaB2N, and `tbbn_repeat`, TBBN run literally by folding
and repeating the memory rows, as a reference) are timed at every t next to BN, the others once
per batch. Steps are interleaved over layers (order rotated each repetition) and the table shows
the best of the repetitions (the median is printed in the progress lines).

Time: by default torch runs one thread and a step is timed by the process's CPU time, so other
load on a shared machine (which delays the process but does not run on its clock) does not count;
with --threads N > 1 the step is timed by the wall clock instead.

Peak memory: bytes live in PyTorch's CPU allocator during one step, above the level at its start,
from the profiler's allocation records (profile_memory=True, running sum in time order). This
counts every tensor allocation (saved activations, gradients, temporaries), unlike tracemalloc,
which does not see PyTorch's allocator.

    python -m benchmarks.norm_overhead            # full run (~30 min on one core)
    python -m benchmarks.norm_overhead --quick    # fewer repetitions, t in {1, 5, 9}
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.profiler import ProfilerActivity, profile

from engine import norms
from engine.backbones import build_backbone
from engine.device import place, update_in_backward
from engine.norms import BatchLayout
from engine.norms.tbbn import TaskBalancedBN, tbbn_split
from engine.optim import SGD

INPUT = (3, 32, 32)
N_TASKS = 10
BATCHES = {"online DER++ 10+20": (10, 20, "online"), "offline 48+16": (48, 16, "offline")}
PER_T = ["bn", "tbbn", "adab2n", "tbbn_repeat"]
FIXED = ["ln", "in", "gn", "cn", "brn"]


class RepeatTBBN(TaskBalancedBN):
    """TBBN exactly as written in algorithms.md: fold, repeat the memory rows r times, BN, unfold."""

    def _train_split(self, x: torch.Tensor, n_c: int, r: int) -> torch.Tensor:
        n, c, h, w = x.shape
        z = torch.cat((x[:n_c].reshape(n_c // r, c * r, h, w), x[n_c:].repeat(1, r, 1, 1)))
        rm, rv = self.running_mean.repeat(r), self.running_var.repeat(r)
        zn = F.batch_norm(z, rm, rv, self.weight.repeat(r), self.bias.repeat(r), True, self._count_batch(), self.eps)
        with torch.no_grad():
            self.running_mean.copy_(rm.view(r, c).mean(0))
            self.running_var.copy_(rv.view(r, c).mean(0))
        return torch.cat((zn[: n_c // r].reshape(n_c, c, h, w), zn[n_c // r:].reshape(n - n_c, r, c, h, w).mean(1)))


def build(name: str, base: nn.Module, setting: str) -> nn.Module:
    net = norms.install(copy.deepcopy(base), "tbbn" if name == "tbbn_repeat" else name,
                        n_tasks=N_TASKS, setting=setting, input_shape=INPUT)
    if name == "tbbn_repeat":  # same layers and hooks, literal training forward
        for m in net.modules():
            if isinstance(m, TaskBalancedBN):
                m.__class__ = RepeatTBBN
    return net


class Trial:
    """One network with its optimizer; `step` is one full training step."""

    def __init__(self, net: nn.Module):
        self.net = net
        frozen = norms.frozen_parameters(net)
        self.opt = SGD([p for p in net.parameters() if id(p) not in frozen], lr=0.01,
                       in_backward=update_in_backward(torch.device("cpu")))   # the engine's CPU step

    def step(self, x: torch.Tensor, y: torch.Tensor, layout: BatchLayout) -> None:
        self.net.train()
        norms.set_layout(self.net, layout)
        loss = norms.add_aux_loss(self.net, F.cross_entropy(self.net(x), y))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()


def peak_mib(trial: Trial, x, y, layout) -> float:
    trial.opt.zero_grad(set_to_none=True)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        trial.step(x, y, layout)
    records = sorted((e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"),
                     key=lambda e: e.start_ns())
    live = peak = 0
    for e in records:
        live += e.nbytes()
        peak = max(peak, live)
    return peak / 2 ** 20


def batch(n_c: int, n_m: int, t: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_c + n_m, *INPUT, generator=g)
    y = torch.randint(0, 10, (n_c + n_m,), generator=g)
    ids = torch.tensor([t] * n_c + [k % (t + 1) for k in range(n_m)])
    return x, y, BatchLayout(n_c, ids, t)


def timed(trials: dict[str, Trial], names: list[str], x, y, layout, reps: int, clock):
    """Best and median ms/step per layer; steps interleaved over layers, order rotated every repetition."""
    for name in names:  # warm-up
        trials[name].step(x, y, layout)
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            t0 = clock()
            trials[name].step(x, y, layout)
            times[name].append((clock() - t0) * 1e3)
    return ({name: min(v) for name, v in times.items()}, {name: statistics.median(v) for name, v in times.items()})


def run_batch(title: str, n_c: int, n_m: int, setting: str, tasks: list[int], reps: int, base: nn.Module,
              clock) -> list[str]:
    trials = {name: Trial(build(name, base, setting)) for name in PER_T + FIXED}
    ms, mem = {}, {}
    for t in tasks:
        x, y, layout = batch(n_c, n_m, t)
        names = PER_T + (FIXED if t == tasks[0] else [])
        ms[t], median = timed(trials, names, x, y, layout, reps, clock)
        mem[t] = {name: peak_mib(trials[name], x, y, layout) for name in PER_T}
        print(f"  {title} t={t} ms best/median: "
              + ", ".join(f"{k} {v:.0f}/{median[k]:.0f}" for k, v in ms[t].items()), flush=True)

    head = "| layer | " + " | ".join(f"t={t} (r={tbbn_split(n_c, n_m, t)})" for t in tasks) + " |"
    rule = "|---" * (len(tasks) + 1) + "|"
    lines = [f"### {title} (setting {setting})", "", "ms/step, best of the repetitions (ratio to BN at the same t)",
             "", head, rule]
    for name in PER_T:
        lines.append(f"| {name} | " + " | ".join(f"{ms[t][name]:.0f} ({ms[t][name] / ms[t]['bn']:.2f}x)"
                                                for t in tasks) + " |")
    t0 = tasks[0]
    lines += ["", f"layers whose cost does not depend on t, at t={t0}: "
              + ", ".join(f"{name} {ms[t0][name]:.0f} ms ({ms[t0][name] / ms[t0]['bn']:.2f}x)" for name in FIXED),
              "", "peak MiB in one step (ratio to BN)", "", head, rule]
    for name in PER_T:
        lines.append(f"| {name} | " + " | ".join(f"{mem[t][name]:.1f} ({mem[t][name] / mem[t]['bn']:.2f}x)"
                                                for t in tasks) + " |")
    worst = {name: max(ms[t][name] / ms[t]["bn"] for t in tasks) for name in ("tbbn", "adab2n")}
    worst_mem = max(mem[t]["tbbn"] / mem[t]["bn"] for t in tasks)
    summary = (f"worst time ratio: tbbn {worst['tbbn']:.2f}x, adab2n {worst['adab2n']:.2f}x (target <= 1.3x); "
               f"worst tbbn peak-memory ratio {worst_mem:.2f}x (target <= 1.2x)")
    lines += ["", summary, ""]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 repetitions, t in {1, 5, 9}")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per layer and t (default 5, quick 2)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: timed by CPU time; more: timed by the wall clock)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.process_time if args.threads == 1 else time.perf_counter
    reps = args.reps or (2 if args.quick else 5)
    tasks = [1, 5, 9] if args.quick else list(range(1, 10))
    torch.manual_seed(0)
    base = place(build_backbone("resnet18", INPUT[0], 10), torch.device("cpu"))
    cpu = platform.processor() or platform.machine()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {cpu}, "
          f"ResNet-18 nf=64, {reps} timed steps per layer and t, "
          f"{'CPU' if clock is time.process_time else 'wall-clock'} time", flush=True)
    lines = []
    for title, (n_c, n_m, setting) in BATCHES.items():
        lines += run_batch(title, n_c, n_m, setting, tasks, reps, base, clock)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
