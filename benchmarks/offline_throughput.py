"""Offline epoch throughput: ResNet-32 on CIFAR-100-shaped data with BN, TBBN (and AdaB2N), t >= 1.

Workload (issue 6): the offline exemplar protocol as the engine runs it (finetune, herding memory
of 2000, every step 48 current + 16 exemplar rows, SGD, 32x32x3 inputs, 100 classes in 10 tasks),
on seq-synth shaped like CIFAR-100. Per layer, in one process: build the trial and train task 0
for one epoch through the trainer (this fills the memory by herding); then, interleaved across
layers, time one epoch of task 1 (TBBN split r = 2) and one epoch on the same rows with the
layout's task index set to 9 (r = 16, the most folded batch of a 10-task run). Reported: steps,
images/s (current + memory rows), and each layer's epoch time relative to BN (target for TBBN:
<= 1.3). The machine may be shared: --rounds N keeps the fastest of N interleaved epochs.

    python benchmarks/offline_throughput.py [--device cpu] [--train_per_class 40] [--rounds 1] [--threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine import norms  # noqa: E402
from engine.config import TrialConfig  # noqa: E402
from engine.trainer import build_trial, train_epoch, train_task  # noqa: E402

LAYERS = ("bn", "tbbn", "adab2n")


def prepare(norm: str, device: str, train_per_class: int):
    """The trial after task 0 (one epoch through the trainer; herding fills the memory)."""
    data = dict(n_classes=100, train_per_class=train_per_class, test_per_class=2, image_size=32, channels=3)
    cfg = TrialConfig(dataset="seq-synth", data_args=data, method="finetune", norm=norm, setting="offline",
                      buffer_mode="herding", buffer_size=2000, n_tasks=10, epochs=1, backbone="resnet32",
                      selection="last", lr=0.1, lr_milestones=(), device=device).resolved()
    torch.manual_seed(0)
    dataset, method = build_trial(cfg, torch.device(device))
    train_task(method, dataset, cfg, 0, lambda event: None)
    return cfg, dataset, method


def time_epoch(cfg, dataset, method, layout_task: int, device: str) -> tuple[int, float]:
    """One epoch of task 1's rows with the layout's task index set to `layout_task`."""
    task = dataset.tasks[1]
    method.begin_task(layout_task, task.x_train, task.y_train)
    method.reset_optimizer()
    memory = method.replay_memory()
    sync(device)
    start = time.perf_counter()
    losses = train_epoch(method, task.x_train, task.y_train, memory, cfg)
    float(torch.stack(losses).sum())                              # wait for the last step
    sync(device)
    return len(losses), time.perf_counter() - start


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train_per_class", type=int, default=40,
                        help="training images per class (CIFAR-100: 500); the memory then holds "
                             "min(200, this) per class of task 0, and an epoch of task 1 has "
                             "max(10 * this / 48, memory / 16) steps")
    parser.add_argument("--rounds", type=int, default=1,
                        help="epochs timed per layer and t, interleaved across layers; the fastest is kept")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default). On a shared machine use 1: with 2 "
                             "threads on 2 busy cores every parallel region waits for a descheduled thread")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    layers = [n for n in LAYERS if n in norms.REGISTRY]
    tasks = (1, 9)
    trials = {}
    for n in layers:
        start = time.perf_counter()
        trials[n] = prepare(n, args.device, args.train_per_class)
        print(f"{n}: task 0 and herding in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    best: dict[tuple[str, int], tuple[int, float]] = {}
    for k in range(args.rounds):
        for t in tasks:
            for n in layers:
                steps, secs = time_epoch(*trials[n], t, args.device)
                print(f"round {k + 1}: {n} t={t}: {steps} steps in {secs:.1f} s", file=sys.stderr, flush=True)
                if (n, t) not in best or secs < best[n, t][1]:
                    best[n, t] = (steps, secs)
    print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.train_per_class} train "
          f"images per class, ResNet-32, batch 48 + 16, best of {args.rounds} round(s)")
    print(f"{'layer':8} {'t':>2} {'r':>3} {'steps':>5} {'epoch s':>8} {'img/s':>7} {'vs BN':>6}")
    for n in layers:
        for t in tasks:
            steps, secs = best[n, t]
            r = split_of(n, t)
            ratio = secs / best["bn", t][1]
            print(f"{n:8} {t:>2} {r:>3} {steps:>5} {secs:8.2f} {steps * 64 / secs:7.1f} {ratio:6.2f}")


def split_of(norm: str, task: int) -> str:
    if norm != "tbbn":
        return "-"
    from engine.norms.tbbn import tbbn_split
    return str(tbbn_split(48, 16, task))


if __name__ == "__main__":
    main()
