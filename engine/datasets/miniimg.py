"""seq-miniimg: Mini-ImageNet, 100 classes, 20 tasks x 5, 84x84 RGB.

Two layouts under <root>/mini-imagenet/ are read, tried in this order:

1. mammoth / AdaB2N arrays: train_x.npy, train_y.npy, test_x.npy, test_y.npy
   (x: uint8 [N, 84, 84, 3], y: labels 0..99). Used as they are: AdaB2N's own split,
   500 train / 100 test images per class.
2. the pickle caches used by online-CL code (RaptorMai/online-continual-learning, learn2learn):
   mini-imagenet-cache-train.pkl, -val.pkl (learn2learn's -validation.pkl also accepted),
   -test.pkl, each {"image_data": uint8 [N, 84, 84, 3], "class_dict": {wnid: [row indices]}},
   64 + 16 + 20 classes x 600 images. The 100 classes are pooled; class id = position of the
   wnid in sorted order. Per class the first 5/6 of its rows in class_dict order (500 of 600)
   train and the last 1/6 (100) test: a fixed split, independent of the trial seed (RaptorMai's
   code makes the same 500/100 cut after a per-class shuffle drawn from the run's seed).

No automatic download: these files are redistributed under ImageNet's terms.
The pickles are unpickled: only point the root at data you trust.

Normalization and augmentation as AdaB2N's seq-miniimg (mammoth): RandomCrop(84, padding=4)
+ horizontal flip and its mean/std. (RaptorMai's online-CL code uses no augmentation.)
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.datasets import REGISTRY
from engine.datasets.base import RawData, fixed
from engine.errors import ConfigError, one_line

NAME = "seq-miniimg"
FOLDER = "mini-imagenet"
N_CLASSES = 100
NPY = ("train_x.npy", "train_y.npy", "test_x.npy", "test_y.npy")
PICKLES = ("mini-imagenet-cache-train.pkl", "mini-imagenet-cache-val.pkl", "mini-imagenet-cache-test.pkl")
TEST_FRACTION = 6   # the last 1/6 of each class's rows is its test split


HOW = (f"put {', '.join(NPY)} (mammoth) or {', '.join(PICKLES)} there (no automatic download: "
       f"ImageNet's terms), or pass --data_root")


def check_miniimg(root: Path, options: Mapping[str, Any]) -> None:
    """The files are there (.npy arrays: their headers are read too, not their data)."""
    folder, pickles = _files(root)
    if pickles is None:
        arrays = _read_npy(folder, HOW, mmap_mode="r")  # mapped: only the headers and labels are read
        _validate(*arrays[:2], folder / "train_x.npy", HOW)
        _validate(*arrays[2:], folder / "test_x.npy", HOW)


@REGISTRY.register("seq-miniimg",
                   n_tasks=20,
                   mean=(0.47313006, 0.44905752, 0.40378186), std=(0.27292014, 0.26559181, 0.27953038),
                   crop_padding=4, flip=True, default_backbone="resnet18", check=check_miniimg,
                   geometry=fixed(N_CLASSES, (3, 84, 84)),
                   rows=lambda o: (500 * N_CLASSES, 100 * N_CLASSES),
                   source=f"<data_root>/{FOLDER} (mammoth's train_x.npy... or the mini-imagenet-cache-*.pkl files)")
def load_miniimg(root: Path, options: Mapping[str, Any]) -> RawData:
    folder, pickles = _files(root)
    return _load_npy(folder, HOW) if pickles is None else _load_pickles(pickles, HOW)


def _files(root: Path) -> tuple[Path, list[Path] | None]:
    """The folder and its pickles (None: mammoth's .npy arrays are there)."""
    folder = root / FOLDER
    if all((folder / n).is_file() for n in NPY):
        return folder, None
    pickles = [_pickle_path(folder, n) for n in PICKLES]
    missing = [n for n, p in zip(PICKLES, pickles) if not p.is_file()]
    if missing:
        raise ConfigError(f"{NAME}: no Mini-ImageNet at {folder} (missing {missing[0]}); {HOW}")
    return folder, pickles


def _pickle_path(folder: Path, name: str) -> Path:
    path = folder / name
    alt = folder / name.replace("-val.", "-validation.")  # learn2learn's name
    return alt if not path.is_file() and alt.is_file() else path


def _load_npy(folder: Path, how: str) -> RawData:
    xtr, ytr, xte, yte = _read_npy(folder, how)
    x_train, y_train = _check_arrays(xtr, ytr, folder / "train_x.npy", how)
    x_test, y_test = _check_arrays(xte, yte, folder / "test_x.npy", how)
    return RawData(x_train, y_train, x_test, y_test, n_classes=N_CLASSES)


def _read_npy(folder: Path, how: str, mmap_mode: str | None = None) -> list[np.ndarray]:
    try:
        return [np.load(folder / n, allow_pickle=False, mmap_mode=mmap_mode) for n in NPY]
    except Exception as err:  # truncated or not an .npy file
        raise ConfigError(f"{NAME}: cannot read the arrays in {folder} ({one_line(err)}); {how}") from err


def _check_arrays(x: np.ndarray, y: np.ndarray, where: Path, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    _validate(x, y, where, how)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2))), torch.from_numpy(y.astype(np.int64))


def _validate(x: np.ndarray, y: np.ndarray, where: Path, how: str) -> None:
    if (x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3 or len(x) == 0 or y.shape != (len(x),)
            or not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= N_CLASSES):
        raise ConfigError(f"{NAME}: {where} holds {x.dtype} images of shape {x.shape} and labels of shape "
                          f"{y.shape} (want uint8 [N, H, W, 3] and N labels 0..{N_CLASSES - 1}); {how}")


def _load_pickles(paths: list[Path], how: str) -> RawData:
    parts = []  # (image_data, {wnid: row indices}) per file
    for path in paths:
        try:
            with open(path, "rb") as fh:
                blob = pickle.load(fh, encoding="latin1")  # latin1: also reads Python 2 pickles
            images = blob["image_data"]
            classes = {str(w): np.asarray(rows, dtype=np.int64) for w, rows in blob["class_dict"].items()}
        except Exception as err:  # a damaged pickle can raise nearly anything
            raise ConfigError(f"{NAME}: cannot read {path} ({one_line(err)}); {how}") from err
        ok = (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
              and images.shape[-1] == 3)
        if ok and parts:  # all files must agree on the image size
            ok = images.shape[1:] == parts[0][0].shape[1:]
        if not ok:
            raise ConfigError(f"{NAME}: {path} holds image_data of type {type(images).__name__} "
                              f"{getattr(images, 'dtype', '')} {getattr(images, 'shape', '')} "
                              f"(want uint8 [N, 84, 84, 3]); {how}")
        if any(len(r) == 0 or r.min() < 0 or r.max() >= len(images) for r in classes.values()):
            raise ConfigError(f"{NAME}: {path} has a class_dict with rows outside its {len(images)} images; {how}")
        parts.append((images, classes))

    owner = {w: k for k, (_, classes) in enumerate(parts) for w in classes}
    if sum(len(c) for _, c in parts) != len(owner):
        raise ConfigError(f"{NAME}: a class appears in more than one of {', '.join(PICKLES)}; {how}")
    wnids = sorted(owner)
    if len(wnids) != N_CLASSES:
        raise ConfigError(f"{NAME}: found {len(wnids)} classes in {paths[0].parent}, want {N_CLASSES}; {how}")

    # split every class's rows: first 5/6 train, last 1/6 test
    splits = []
    for w in wnids:
        rows = parts[owner[w]][1][w]
        n_test = len(rows) // TEST_FRACTION
        if n_test == 0:
            raise ConfigError(f"{NAME}: class {w} has only {len(rows)} images; need at least {TEST_FRACTION}; {how}")
        splits.append((owner[w], rows[:-n_test], rows[-n_test:]))
    h, w_ = parts[0][0].shape[1:3]

    def gather(which: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = sum(len(s[which]) for s in splits)
        out = np.empty((n, 3, h, w_), dtype=np.uint8)  # filled in place: no NHWC copy of the lot
        labels = np.empty(n, dtype=np.int64)
        pos = 0
        for label, s in enumerate(splits):
            rows = s[which]
            out[pos:pos + len(rows)] = parts[s[0]][0][rows].transpose(0, 3, 1, 2)
            labels[pos:pos + len(rows)] = label
            pos += len(rows)
        return torch.from_numpy(out), torch.from_numpy(labels)

    (x_train, y_train), (x_test, y_test) = gather(1), gather(2)
    return RawData(x_train, y_train, x_test, y_test, n_classes=N_CLASSES)
