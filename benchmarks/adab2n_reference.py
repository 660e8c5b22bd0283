"""Run a checkout of the AdaB2N reference implementation (github.com/lvyilin/AdaB2N) on
engine_throughput.py's workload, so the engine's wall time and memory have the real reference,
measured on the same machine in the same run, beside them.

The reference's code stays out of this project: give the path of your own checkout. It is run
unmodified, from a scratch copy (its paths are relative to the working directory, and it writes
logs there), as `python utils/main.py --model derpp --dataset seq-cifar10 ...` on the CPU, with
- the workload's images: seq-synth's (the engine's), written in torchvision's CIFAR-10 format,
  2000 training and 500 test images instead of the real 50000/10000;
- torchvision's CIFAR md5 checks passing on presence (a sitecustomize on PYTHONPATH), since
  these files are not the published ones and the reference downloads whatever fails them;
- CUDA_VISIBLE_DEVICES="" (the CPU; the reference otherwise asks nvidia-smi for a GPU).
Its own settings stay: 4 torch threads, 4 DataLoader workers, an evaluation of the untrained
network and one at every task start, the progress bar.

The published code fails with its default layer (`--nl BN`: models/utils/continual_model.py wraps
every BatchNorm2d in another, "empty(): argument 'size' ... not BatchNorm2d"); with `--nl AdaB2N`
it runs as published, so compare the two with `--norm adab2n`.

    python benchmarks/adab2n_reference.py PATH_TO_ADAB2N [--norm adab2n|bn]
"""
from __future__ import annotations

import argparse
import importlib.util
import pickle
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.measure import DATA_ARGS, run_measured  # noqa: E402

# The reference's flags for engine_throughput.py's workload (DER++ online, bs 10, replay 10,
# reservoir 500, lr 0.03, alpha 0.1, beta 0.5, one epoch, seed 0 = the natural class order).
WORKLOAD_FLAGS = ["--model", "derpp", "--dataset", "seq-cifar10", "--buffer_size", "500",
                  "--buffer_mode", "reservoir", "--lr", "0.03", "--alpha", "0.1", "--beta", "0.5",
                  "--batch_size", "10", "--minibatch_size", "10", "--n_epochs", "1", "--seed", "0",
                  "--nowand", "1"]
# The same layer on both sides: the reference's --nl and AdaB2N flags for each engine --norm.
LAYER_FLAGS = {"bn": ["--nl", "BN"],
               "adab2n": ["--nl", "AdaB2N", "--kappa", "1.0", "--lambd", "0.1", "--ada_t0", "0"]}
NEEDS = ("setproctitle", "torchvision", "PIL", "wandb")   # imported by the reference's main.py
# torchvision checks every CIFAR file against the published md5; these files are synthetic.
SITECUSTOMIZE = """\
import os
import torchvision.datasets.cifar as cifar
cifar.check_integrity = lambda fpath, md5=None: os.path.isfile(fpath)
"""


def check_checkout(path: Path) -> None:
    if not (path / "utils" / "main.py").is_file() or not (path / "models" / "derpp.py").is_file():
        raise SystemExit(f"{path} is not a checkout of github.com/lvyilin/AdaB2N "
                         "(no utils/main.py and models/derpp.py)")


def missing_packages() -> list[str]:
    """What the reference imports and this Python lacks (not the project's requirements:
    only a reference run needs them)."""
    return [name for name in NEEDS if importlib.util.find_spec(name) is None]


def write_cifar10(folder: Path, data_args: str) -> None:
    """seq-synth's images for `data_args` (the engine's workload) as torchvision's CIFAR-10 files."""
    from engine import datasets
    from engine.options import parse_kv

    options = datasets.resolve_options("seq-synth", parse_kv(data_args, "data_args"))
    raw = datasets.REGISTRY.get("seq-synth").load(folder, options)
    folder.mkdir(parents=True)

    def dump(name: str, x, y) -> None:   # R, G, B planes per row, as the real files hold them
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": x.reshape(len(y), -1).numpy(), "labels": y.tolist()}, fh)

    for i, rows in enumerate(np.array_split(np.arange(len(raw.y_train)), 5), 1):  # the reference shuffles
        dump(f"data_batch_{i}", raw.x_train[rows], raw.y_train[rows])
    dump("test_batch", raw.x_test, raw.y_test)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": [f"class{k}" for k in range(raw.n_classes)]}, fh)


def reference_command(checkout: Path, norm: str, data_args: str, scratch: Path) -> tuple[list[str], dict, Path]:
    """(command, environment, working directory) of one reference run in a scratch copy."""
    check_checkout(checkout)
    if norm not in LAYER_FLAGS:
        raise SystemExit(f"the reference has no layer for --norm {norm}; "
                         f"choose one of: {', '.join(sorted(LAYER_FLAGS))}")
    work = scratch / "reference"
    shutil.copytree(checkout, work, ignore=lambda folder, names: [  # not its git history or old data
        n for n in names if n in (".git", "__pycache__") or (n == "data" and Path(folder) == checkout)])
    write_cifar10(work / "data" / "datasets" / "cifar10" / "cifar-10-batches-py", data_args)
    (scratch / "shim").mkdir()
    (scratch / "shim" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = {"CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(scratch / "shim"), "PYTHONUNBUFFERED": "1"}
    return [sys.executable, "utils/main.py", *WORKLOAD_FLAGS, *LAYER_FLAGS[norm]], env, work


def run_reference(checkout: Path, norm: str, data_args: str) -> tuple[float, float]:
    """One measured reference run in a fresh process: (wall s, peak RSS MiB)."""
    missing = missing_packages()
    if missing:
        raise SystemExit(f"the reference needs {', '.join(missing)}: pip install {' '.join(missing)}")
    with tempfile.TemporaryDirectory() as tmp:
        cmd, env, cwd = reference_command(checkout.resolve(), norm, data_args, Path(tmp))
        try:
            _, wall, rss = run_measured(cmd, cwd=cwd, env=env)
        except SystemExit as failed:
            hint = " (the published code fails with --nl BN: use --norm adab2n)" if norm == "bn" else ""
            raise SystemExit(f"the AdaB2N reference failed{hint}: {failed}") from None
    return wall, rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkout", type=Path, help="a checkout of github.com/lvyilin/AdaB2N")
    parser.add_argument("--norm", default="adab2n", choices=sorted(LAYER_FLAGS))
    args = parser.parse_args()
    wall, rss = run_reference(args.checkout, args.norm, DATA_ARGS)
    print(f"AdaB2N reference ({args.norm})  {wall:8.1f} s   peak RSS {rss:.0f} MiB = {rss * 2**20 / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
