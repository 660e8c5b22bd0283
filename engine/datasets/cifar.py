"""seq-cifar10 (5 tasks x 2) and seq-cifar100 (10 tasks x 10): CIFAR in torchvision's on-disk format.

Layout under the data root (what torchvision.datasets.CIFAR10/CIFAR100 download and untar):

    <root>/cifar-10-batches-py/   data_batch_1 .. data_batch_5, test_batch, batches.meta
    <root>/cifar-100-python/      train, test, meta

Each data file is a pickle of {"data": uint8 [N, 3072] (R, G, B planes of a 32x32 image),
"labels" (CIFAR-10) or "fine_labels" (CIFAR-100)}; the meta file holds the class names.
Get them from https://www.cs.toronto.edu/~kriz/cifar.html ("python version") and untar into
<root>. When the folder is missing and option download=True (the default), `prepare` (the
launcher's data stage, or a trial run alone) fetches the published archive once: md5-checked,
unpacked beside and moved into place (engine/datasets/download.py). Sweep trials never download.

torchvision's readers are used with their per-file md5 checks off: the content is validated
instead (uint8 images, labels in range), so re-packed files load too. The files are pickles:
only point the root at data you trust (as with torchvision itself).

Splits: the official 50000 train / 10000 test. Normalization and augmentation as mammoth and
AdaB2N: RandomCrop(32, padding=4) + horizontal flip, the mean/std below.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from engine.datasets import REGISTRY
from engine.datasets.base import RawData, fixed
from engine.datasets.download import Archive
from engine.errors import ConfigError, one_line
from engine.options import Option

OPTIONS = {"download": Option(bool, True, "download CIFAR into data_root when it is missing")}


def _files(cls) -> list[str]:
    return [name for name, _ in cls.train_list + cls.test_list] + [cls.meta["filename"]]


def _missing(cls, root: Path) -> list[str]:
    return [name for name in _files(cls) if not (root / cls.base_folder / name).is_file()]


def _reader(cls):
    """torchvision's reader without its per-file md5 checks (content is validated instead)."""
    return type(cls.__name__, (cls,), {
        "train_list": [[name, None] for name, _ in cls.train_list],
        "test_list": [[name, None] for name, _ in cls.test_list],
        "meta": {**cls.meta, "md5": None},
    })


def _load(name: str, title: str, n_classes: int, root: Path, o: Mapping[str, Any]) -> RawData:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if n_classes == 10 else CIFAR100
    folder = root / cls.base_folder
    how = (f"put the python version of {title} there ({cls.url}, untarred; or delete the folder and "
           f"run with download=True to fetch it) or pass --data_root")
    missing = _missing(cls, root)
    if missing:
        why = "; download=False" if not o["download"] else ""
        raise ConfigError(f"{name}: no {title} at {folder} (missing {missing[0]}{why}); {how}")

    reader = _reader(cls)
    try:
        train, test = reader(str(root), train=True), reader(str(root), train=False)
    except Exception as err:  # a damaged pickle can raise nearly anything
        raise ConfigError(f"{name}: cannot read {title} at {folder} ({one_line(err)}); {how}") from err
    x_train, y_train = _tensors(train, n_classes, f"{name}: {folder} (train)", how)
    x_test, y_test = _tensors(test, n_classes, f"{name}: {folder} (test)", how)
    return RawData(x_train, y_train, x_test, y_test, n_classes=n_classes)


def _tensors(ds, n_classes: int, where: str, how: str) -> tuple[torch.Tensor, torch.Tensor]:
    data, y = ds.data, np.asarray(ds.targets)
    if data.dtype != np.uint8 or len(data) == 0 or len(y) != len(data) or y.min() < 0 or y.max() >= n_classes:
        raise ConfigError(f"{where} holds {len(data)} {data.dtype} images and {len(y)} labels "
                          f"(want uint8 images and labels 0..{n_classes - 1}); {how}")
    # torchvision turned the planes into NHWC; back to NCHW (contiguous again, usually no copy)
    x = torch.from_numpy(np.ascontiguousarray(data.transpose(0, 3, 1, 2)))
    return x, torch.from_numpy(y.astype(np.int64))


def _cifar(name: str, title: str, n_classes: int, n_tasks: int, mean: tuple, std: tuple, url: str, md5: str,
           folder: str):
    """Register one CIFAR: torchvision's format, 32x32 RGB, mammoth's augmentation."""
    @REGISTRY.register(name, n_tasks=n_tasks, mean=mean, std=std, crop_padding=4, flip=True,
                       default_backbone="resnet18", options=OPTIONS, geometry=fixed(n_classes, (3, 32, 32)),
                       rows=lambda o: (50_000, 10_000), archive=Archive(url, md5, folder),
                       source=f"<data_root>/{folder} (torchvision format; downloaded when missing)")
    def load(root: Path, options: Mapping[str, Any]) -> RawData:
        return _load(name, title, n_classes, root, options)
    return load


load_cifar10 = _cifar("seq-cifar10", "CIFAR-10", 10, 5, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2615),
                      "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                      "cifar-10-batches-py")
load_cifar100 = _cifar("seq-cifar100", "CIFAR-100", 100, 10, (0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761),
                       "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85",
                       "cifar-100-python")
