"""benchmarks/adab2n_reference.py: what it hands the AdaB2N reference, checked with real readers
(the reference itself is not part of the project, so its run is measured, not tested)."""
import os
import subprocess
import sys

import pytest
import torch

from benchmarks.adab2n_reference import LAYER_FLAGS, WORKLOAD_FLAGS, reference_command, write_cifar10
from engine import datasets
from engine.options import parse_kv

DATA_ARGS = "n_classes=10,train_per_class=3,test_per_class=2,image_size=32,channels=3"


def synth_images(root):
    options = datasets.resolve_options("seq-synth", parse_kv(DATA_ARGS, "data_args"))
    return datasets.REGISTRY.get("seq-synth").load(root, options)


def test_the_reference_gets_the_engine_images_in_cifar10_format(tmp_path):
    write_cifar10(tmp_path / "cifar-10-batches-py", DATA_ARGS)
    read = datasets.REGISTRY.get("seq-cifar10").load(tmp_path, {"download": False})
    made = synth_images(tmp_path)
    for split in ("train", "test"):   # pixel for pixel, through the engine's own CIFAR reader
        assert torch.equal(getattr(read, f"x_{split}"), getattr(made, f"x_{split}"))
        assert torch.equal(getattr(read, f"y_{split}"), getattr(made, f"y_{split}"))


@pytest.fixture
def checkout(tmp_path):
    """The files a checkout of lvyilin/AdaB2N is recognised by, its git folder and old data."""
    root = tmp_path / "AdaB2N"
    for name in ("utils/main.py", "models/derpp.py", ".git/HEAD", "data/datasets/old.bin", "datasets/data/keep.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text("")
    return root


def test_the_reference_runs_a_scratch_copy_with_its_flags_on_the_cpu(checkout, tmp_path):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    cmd, env, cwd = reference_command(checkout, "adab2n", DATA_ARGS, scratch)
    assert cmd[1:] == ["utils/main.py", *WORKLOAD_FLAGS, *LAYER_FLAGS["adab2n"]]
    assert cwd.parent == scratch and (cwd / "utils" / "main.py").is_file()
    assert not (cwd / ".git").exists() and not (cwd / "data" / "datasets" / "old.bin").exists()
    assert (cwd / "datasets" / "data" / "keep.py").is_file()       # only the top-level data is left out
    assert (checkout / "data" / "datasets" / "old.bin").is_file()  # and the checkout is untouched
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    # torchvision's own reader (as the reference calls it) accepts the synthetic files only
    # through the shim: without it the md5 checks fail.
    read = ("import sys, torchvision; d = torchvision.datasets.CIFAR10(sys.argv[1], train=False); "
            "print(len(d))")
    root = str(cwd / "data" / "datasets" / "cifar10")
    shimmed = subprocess.run([sys.executable, "-c", read, root], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=120)
    assert shimmed.returncode == 0 and shimmed.stdout.split() == ["20"], shimmed.stderr
    plain = subprocess.run([sys.executable, "-c", read, root], capture_output=True, text=True, timeout=120)
    assert plain.returncode != 0 and "corrupted" in plain.stderr


def test_a_folder_that_is_not_the_reference_or_a_layer_it_lacks_is_one_clear_line(checkout, tmp_path):
    with pytest.raises(SystemExit, match="is not a checkout of github.com/lvyilin/AdaB2N"):
        reference_command(tmp_path, "adab2n", DATA_ARGS, tmp_path)
    with pytest.raises(SystemExit, match="no layer for --norm gn; choose one of: adab2n, bn"):
        reference_command(checkout, "gn", DATA_ARGS, tmp_path)


def test_a_reference_run_without_its_packages_says_which_to_install(checkout, monkeypatch):
    import benchmarks.adab2n_reference as ref

    monkeypatch.setattr(ref, "NEEDS", ("torchvision", "no_such_package_for_the_reference"))
    assert ref.missing_packages() == ["no_such_package_for_the_reference"]
    with pytest.raises(SystemExit, match="needs no_such_package_for_the_reference: pip install"):
        ref.run_reference(checkout, "adab2n", DATA_ARGS)
