"""seq-tinyimg: TinyImageNet-200, 200 classes, 10 tasks x 20, 64x64 RGB.

Layout under the data root (the zip as distributed, unzipped into <root>):

    <root>/tiny-imagenet-200/
        wnids.txt                      the 200 WordNet ids, one per line
        train/<wnid>/images/*.JPEG     500 per class (train/<wnid>/*_boxes.txt is ignored)
        val/images/*.JPEG              10000 images
        val/val_annotations.txt        "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>" per line
        test/                          unlabeled, unused

Get it from http://cs231n.stanford.edu/tiny-imagenet-200.zip (no automatic download).
Class id = position of the wnid in sorted(wnids.txt). The labeled val split serves as the test
split, as in mammoth. Images are decoded with PIL, converted to RGB (a few are grayscale) and
resized (bilinear) only when not 64x64.

Decoding ~110k JPEGs takes a minute, so the decoded arrays are cached once in
tiny-imagenet-200/.cache_uint8.pt (written to a temp file, then renamed). The cache is keyed by a
fingerprint of wnids.txt, val_annotations.txt and the file names: a stale or unreadable cache is
rebuilt; a read-only folder is decoded every time (with a warning). Concurrent trials build it once.

Normalization and augmentation as mammoth's seq-tinyimg: RandomCrop(64, padding=4) + flip.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Mapping

import torch

from engine.datasets import REGISTRY
from engine.datasets.base import RawData, fixed
from engine.datasets import files
from engine.datasets.files import file_lock
from engine.errors import ConfigError, one_line

NAME = "seq-tinyimg"
FOLDER = "tiny-imagenet-200"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
SIZE = 64
CACHE = ".cache_uint8.pt"
CACHE_VERSION = 1   # bump when the decoding changes, so old caches are rebuilt


def check_tinyimg(root: Path, options: Mapping[str, Any]) -> None:
    """The class list, annotations and every class's images are listed (none is decoded)."""
    _index(root / FOLDER, f"download {URL} and unzip it into {root}, or pass --data_root")


@REGISTRY.register("seq-tinyimg",
                   n_tasks=10,
                   mean=(0.4802, 0.4480, 0.3975), std=(0.2770, 0.2691, 0.2821), crop_padding=4, flip=True,
                   default_backbone="resnet18", check=check_tinyimg, geometry=fixed(200, (3, SIZE, SIZE)),
                   rows=lambda o: (100_000, 10_000),
                   source=f"<data_root>/{FOLDER} (unzip {URL})")
def load_tinyimg(root: Path, options: Mapping[str, Any]) -> RawData:
    folder = root / FOLDER
    how = f"download {URL} and unzip it into {root}, or pass --data_root"
    n_classes, train, test, fingerprint = _index(folder, how)
    cache = folder / CACHE
    arrays = _read_cache(cache, fingerprint, len(train[0]), len(test[0]))
    if arrays is None:
        with file_lock(folder / (CACHE + ".lock")):
            # another trial may have built it while we waited for the lock
            arrays = _read_cache(cache, fingerprint, len(train[0]), len(test[0]))
            if arrays is None:
                arrays = {"x_train": decode_images(train[0], SIZE, how),
                          "x_test": decode_images(test[0], SIZE, how)}
                files.write_cache(cache, {"version": CACHE_VERSION, "fingerprint": fingerprint, **arrays}, NAME)
    return RawData(arrays["x_train"], torch.tensor(train[1], dtype=torch.long),
                   arrays["x_test"], torch.tensor(test[1], dtype=torch.long), n_classes=n_classes)


def _index(folder: Path, how: str):
    """File lists and labels of both splits, and a fingerprint of them (no image is opened)."""
    wnids_file, ann_file = folder / "wnids.txt", folder / "val" / "val_annotations.txt"
    for f in (wnids_file, ann_file):
        if not f.is_file():
            raise ConfigError(f"{NAME}: no TinyImageNet-200 at {folder} "
                              f"(missing {f.relative_to(folder)}); {how}")
    wnids = sorted(set(_read_text(wnids_file, how).split()))
    if not wnids:
        raise ConfigError(f"{NAME}: {wnids_file} lists no classes; {how}")
    label = {w: i for i, w in enumerate(wnids)}
    digest = hashlib.sha1(f"{CACHE_VERSION} {SIZE}\n".encode())

    train_paths: list[Path] = []
    train_labels: list[int] = []
    for w in wnids:
        d = folder / "train" / w / "images"
        names = sorted(n for n in os.listdir(d) if n.lower().endswith((".jpeg", ".jpg"))) if d.is_dir() else []
        if not names:
            raise ConfigError(f"{NAME}: no training images for class {w} in {d}; {how}")
        train_paths += [d / n for n in names]
        train_labels += [label[w]] * len(names)
        digest.update(f"{w}:{','.join(names)}\n".encode())

    ann = _read_text(ann_file, how)
    test_paths: list[Path] = []
    test_labels: list[int] = []
    for k, line in enumerate(ann.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) < 2 or parts[1] not in label:
            raise ConfigError(f"{NAME}: {ann_file} line {k} names no class of wnids.txt "
                              f"({line.strip()[:60]!r}); {how}")
        test_paths.append(folder / "val" / "images" / parts[0])
        test_labels.append(label[parts[1]])
    if not test_paths:
        raise ConfigError(f"{NAME}: {ann_file} lists no images; {how}")
    digest.update(ann.encode())
    return len(wnids), (train_paths, train_labels), (test_paths, test_labels), digest.hexdigest()


def _read_text(path: Path, how: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{NAME}: cannot read {path} ({one_line(err)}); {how}") from err


def decode_images(paths: list[Path], size: int, how: str) -> torch.Tensor:
    """JPEG/PNG files -> uint8 [N, 3, size, size], resized only when not size x size."""
    def fit(im):
        return im if im.size == (size, size) else im.resize((size, size), 2)  # 2 = PIL's BILINEAR

    return files.decode_images(paths, size, fit, NAME, how)


def _read_cache(path: Path, fingerprint: str, n_train: int, n_test: int) -> dict | None:
    """The cached arrays, or None when absent, stale or unreadable (then it is rebuilt)."""
    if not path.is_file():
        return None
    try:
        # mmap: concurrent trials on one machine share the pages instead of each holding a copy
        c = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        ok = (c["version"] == CACHE_VERSION and c["fingerprint"] == fingerprint
              and c["x_train"].dtype == c["x_test"].dtype == torch.uint8
              and tuple(c["x_train"].shape) == (n_train, 3, SIZE, SIZE)
              and tuple(c["x_test"].shape) == (n_test, 3, SIZE, SIZE))
    except Exception:  # truncated or garbage file
        return None
    return c if ok else None
