"""Evaluation cost (issue 17 point 6): the engine's eval forward, unfolded and folded
(engine/folding.py), in fp32 and under bf16 autocast, for BN, TBBN and AdaB2N.

    python benchmarks/eval_cost.py [--images 1500] [--threads 1] [--reps 3]

ResNet-18 (nf 64), 32x32x3, channels-last, chunks of the engine's eval size, the layers'
running statistics and affine parameters drawn at random (as after training). The variants run
interleaved, `--reps` times each; the best time of each is given as a ratio to the unfolded fp32
forward of the same layer, with the share of rows whose class (argmax) differs from it.
Results go to benchmarks/RESULTS.md by hand.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.measure import host  # noqa: E402
from engine import norms  # noqa: E402
from engine.backbones import build_backbone  # noqa: E402
from engine.device import eval_chunk, place  # noqa: E402
from engine.folding import folded  # noqa: E402


def network(name: str, device: torch.device) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_backbone("resnet18", 3, 100)
    norms.install(net, name, n_tasks=5, setting="online", input_shape=(3, 32, 32))
    with torch.no_grad():
        for m in net.modules():
            if hasattr(m, "running_mean"):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    return place(net, device).eval()


def scores(net: torch.nn.Module, x: torch.Tensor, bf16: bool) -> torch.Tensor:
    ctx = torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.no_grad(), ctx:
        return torch.cat([net(c).float() for c in x.split(eval_chunk(x.device))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=1500, help="rows per evaluation (the engine benchmark's 5 evaluations: 1500)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    print(f"host {host()}; torch {torch.__version__}, {args.threads} thread(s), {args.images} images")
    x = torch.randn(args.images, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    print("| layer | fp32 | fp32 folded | bf16 | bf16 folded | classes changed: folded / bf16 | folding itself |")
    print("|---|---|---|---|---|---|---|")
    for name in ("bn", "tbbn", "adab2n"):
        net = network(name, device)
        t0 = time.perf_counter()
        fold = folded(net, x[:2])
        fold_s = time.perf_counter() - t0
        variants = {"fp32": (net, False), "fp32 folded": (fold, False), "bf16": (net, True), "bf16 folded": (fold, True)}
        times = {k: [] for k in variants}
        out = {}
        for _ in range(args.reps):
            for k, (n, bf16) in variants.items():
                t0 = time.perf_counter()
                out[k] = scores(n, x, bf16)
                times[k].append(time.perf_counter() - t0)
        best = {k: min(v) for k, v in times.items()}
        ref = out["fp32"].argmax(1)
        changed = [100 * float((out[k].argmax(1) != ref).float().mean()) for k in ("fp32 folded", "bf16")]
        print(f"| {name} | {best['fp32']:.2f} s | " + " | ".join(f"{best[k] / best['fp32']:.2f}x" for k in list(variants)[1:])
              + f" | {changed[0]:.2f}% / {changed[1]:.2f}% | {fold_s * 1e3:.0f} ms |")


if __name__ == "__main__":
    main()
