"""seq-imagenet100: ImageNet-100 (100 ILSVRC-2012 classes), 10 tasks x 10, the TBBN offline protocol
(src/run_imagenet100.sh: ResNet-18, 100 epochs, milestones 40/80, 2000 exemplars).

Layout under the data root: an ImageFolder tree plus the class list.

    <root>/imagenet100/
        classes.txt            the 100 WordNet ids, one per line, in label order (label i = line i);
                               blank lines and '#' comments are ignored
        train/<wnid>/*.JPEG    training images of every listed class (~1300 each)
        val/<wnid>/*.JPEG      the ILSVRC-2012 validation images of every class (50 each): the test split

train/ and val/ may hold more classes (a whole ImageNet ImageFolder): only the listed ones are read.
Options: folder=<dir> (relative to the data root, or absolute) and class_list=<file> (relative to
the folder, or absolute), e.g. folder=/data/imagenet,class_list=/data/imagenet100.txt.
Files ending .jpeg/.jpg/.png (any case) are read; images are decoded with PIL, converted to RGB,
resized so the shorter side is image_size * 256 / 224 and center-cropped to image_size (the usual
ImageNet evaluation transform), for train and test alike.

Class order: TBBN/FACIL fix the iCaRL order over the 100 labels (their dataset_config
`class_order`); with icarl_order=true (the default) label i becomes the position of i in that
order, so seed 0 reproduces TBBN's tasks (seeds > 0 permute on top, as for every dataset).

Augmentation: random crop with 28 px zero padding (224/8, CIFAR's 4/32 ratio) + flip. FACIL uses
RandomResizedCrop(224) on the full-size image and CenterCrop(224) without resizing at test time;
the engine's batched on-device augmentation has no resized crop (a noted deviation).

Decoding ~130k JPEGs takes long, so the decoded arrays are cached in the folder as
`.cache_imagenet100_<size>_<fingerprint>.pt` (written to a temp file, then renamed; read with
mmap), keyed by the class list and the file names; a read-only folder is decoded every time (with
a warning). At 224 px the arrays take ~20 GB (train) + 0.75 GB (test) of memory.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from engine.datasets import REGISTRY, files
from engine.datasets.base import RawData
from engine.datasets.files import decode_images, file_lock
from engine.errors import ConfigError
from engine.options import Option

NAME = "seq-imagenet100"
EXTENSIONS = (".jpeg", ".jpg", ".png")
CACHE_VERSION = 1   # bump when the decoding changes, so old caches are not reused
# FACIL/TBBN dataset_config["imagenet100"]["class_order"] (the iCaRL order)
ICARL_ORDER = (
    68, 56, 78, 8, 23, 84, 90, 65, 74, 76, 40, 89, 3, 92, 55, 9, 26, 80, 43, 38, 58, 70, 77, 1, 85, 19, 17, 50,
    28, 53, 13, 81, 45, 82, 6, 59, 83, 16, 15, 44, 91, 41, 72, 60, 79, 52, 20, 10, 31, 54, 37, 95, 14, 71, 96,
    98, 97, 2, 64, 66, 42, 22, 35, 86, 24, 34, 87, 21, 99, 0, 88, 27, 18, 94, 11, 12, 47, 25, 30, 46, 62, 69,
    36, 61, 7, 63, 75, 5, 32, 4, 51, 48, 73, 93, 39, 67, 29, 49, 57, 33)

OPTIONS = {
    "folder": Option(str, "imagenet100", "ImageFolder root with train/ and val/ (relative to data_root)"),
    "class_list": Option(str, "classes.txt", "file of the 100 WordNet ids in label order (relative to folder)"),
    "image_size": Option(int, 224, "stored height = width in pixels (shorter side resized to size*256/224, "
                                   "center crop)", low=8),
    "icarl_order": Option(bool, True, "relabel by FACIL/TBBN's fixed iCaRL class order (needs 100 classes)"),
    "cache": Option(bool, True, "cache the decoded arrays in the folder"),
}


HOW = ("see engine/datasets/imagenet100.py for the layout "
       "(<data_root>/imagenet100/classes.txt, train/<wnid>/, val/<wnid>/)")


def check_imagenet100(root: Path, o: Mapping[str, Any]) -> None:
    """The class list and every listed class's files are there (no image is opened)."""
    _files(root, o)


@REGISTRY.register(NAME,
                   n_tasks=10,
                   mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_padding=28, flip=True,
                   default_backbone="resnet18_imagenet", options=OPTIONS, check=check_imagenet100,
                   geometry=lambda o: (len(ICARL_ORDER), (3, o["image_size"], o["image_size"])),
                   rows=lambda o: (130_000, 5_000),   # at most 1300 train images per ImageNet class, 50 val
                   source="<data_root>/imagenet100: classes.txt (100 WordNet ids) + train/<wnid>/, val/<wnid>/ (ImageFolder)")
def load_imagenet100(root: Path, o: Mapping[str, Any]) -> RawData:
    folder, wnids, remap, train, test = _files(root, o)
    how = HOW
    size = o["image_size"]
    digest = hashlib.sha1(f"{CACHE_VERSION} {size}\n{' '.join(wnids)}\n".encode())
    for paths, _ in (train, test):
        digest.update("\n".join(str(p.relative_to(folder)) for p in paths).encode())
    cache = folder / f".cache_imagenet100_{size}_{digest.hexdigest()[:16]}.pt"
    arrays = _read_cache(cache, len(train[0]), len(test[0]), size) if o["cache"] else None
    if arrays is None:
        with file_lock(folder / ".cache_imagenet100.lock") if o["cache"] else contextlib.nullcontext():
            arrays = _read_cache(cache, len(train[0]), len(test[0]), size) if o["cache"] else None
            if arrays is None:  # nobody built it while we waited for the lock
                arrays = {"x_train": decode_resized(train[0], size, how),
                          "x_test": decode_resized(test[0], size, how)}
                if o["cache"]:
                    files.write_cache(cache, arrays, NAME)
    return RawData(arrays["x_train"], remap[torch.tensor(train[1], dtype=torch.long)],
                   arrays["x_test"], remap[torch.tensor(test[1], dtype=torch.long)], n_classes=len(wnids))


def _files(root: Path, o: Mapping[str, Any]):
    folder = Path(o["folder"]).expanduser()
    folder = folder if folder.is_absolute() else root / folder
    wnids = _read_class_list(folder, o["class_list"], HOW)
    remap = _label_map(len(wnids), o["icarl_order"])
    train, test = (_index(folder / split, wnids, HOW) for split in ("train", "val"))
    return folder, wnids, remap, train, test


def _read_class_list(folder: Path, name: str, how: str) -> list[str]:
    path = Path(name).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.is_file():
        raise ConfigError(f"{NAME}: no class list at {path}; {how}")
    wnids = [line.split("#")[0].split()[0] for line in path.read_text().splitlines() if line.split("#")[0].strip()]
    if not wnids or len(set(wnids)) != len(wnids):
        raise ConfigError(f"{NAME}: {path} must list distinct class ids, one per line ({len(wnids)} lines); {how}")
    return wnids


def _index(split: Path, wnids: list[str], how: str) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    labels: list[int] = []
    for label, wnid in enumerate(wnids):
        d = split / wnid
        names = sorted(n for n in os.listdir(d) if n.lower().endswith(EXTENSIONS)) if d.is_dir() else []
        if not names:
            raise ConfigError(f"{NAME}: no images of class {wnid} in {d}; {how}")
        paths += [d / n for n in names]
        labels += [label] * len(names)
    return paths, labels


def _label_map(n_classes: int, icarl_order: bool) -> torch.Tensor:
    if not icarl_order:
        return torch.arange(n_classes)
    if n_classes != len(ICARL_ORDER):
        raise ConfigError(f"{NAME}: icarl_order needs the {len(ICARL_ORDER)}-class list, the list has "
                          f"{n_classes} classes; pass --data_args icarl_order=false")
    remap = torch.empty(n_classes, dtype=torch.long)
    remap[list(ICARL_ORDER)] = torch.arange(n_classes)   # label i -> its position in the order
    return remap


def decode_resized(paths: list[Path], size: int, how: str) -> torch.Tensor:
    """Image files -> uint8 [N, 3, size, size]: RGB, shorter side to size*256/224, center crop."""
    short = round(size * 256 / 224)

    def fit(im):
        w, h = im.size
        scale = short / min(w, h)
        w, h = max(size, round(w * scale)), max(size, round(h * scale))
        im = im.resize((w, h), 2)  # 2 = PIL's BILINEAR
        left, top = (w - size) // 2, (h - size) // 2
        return im.crop((left, top, left + size, top + size))

    return decode_images(paths, size, fit, NAME, how)


def _read_cache(path: Path, n_train: int, n_test: int, size: int) -> dict | None:
    """The cached arrays, or None when absent or unreadable (then they are decoded again)."""
    if not path.is_file():
        return None
    try:
        c = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ok = (tuple(c["x_train"].shape) == (n_train, 3, size, size)
              and tuple(c["x_test"].shape) == (n_test, 3, size, size)
              and c["x_train"].dtype == c["x_test"].dtype == torch.uint8)
    except Exception:  # truncated or garbage file
        return None
    return c if ok else None
