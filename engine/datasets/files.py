"""Small file helpers shared by the on-disk dataset loaders."""
from __future__ import annotations

import contextlib
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from engine.errors import ConfigError, one_line
from engine.results import atomic_write

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, concurrent trials may fetch twice
    fcntl = None  # type: ignore[assignment]


def write_cache(path: Path, payload: dict, dataset: str) -> None:
    """Save a decode cache atomically and durably (readers see the old file or the whole new one);
    one that cannot be written is a warning: the images are decoded again next time."""
    try:
        atomic_write(path, lambda fh: torch.save(payload, fh), mode="wb")
    except OSError as err:
        warnings.warn(f"{dataset}: could not write the decode cache {path} ({one_line(err)}); "
                      f"the images will be decoded again next time", stacklevel=2)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive lock on `path`, so concurrent trials download or build a cache only once.

    Where the lock file cannot be created (read-only data) nobody can write either: no lock.
    """
    try:
        fh = open(path, "ab")
    except OSError:
        fh = None
    try:
        if fh is not None and fcntl is not None:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        yield
    finally:
        if fh is not None:
            fh.close()  # releases the lock


def decode_images(paths: list[Path], size: int, fit: Callable, name: str, how: str) -> torch.Tensor:
    """Image files -> uint8 [N, 3, size, size]; `fit(rgb_image)` brings one PIL image to
    size x size. Decoded on threads, since PIL decodes without the GIL; errors name the dataset
    and say `how` to get the data."""
    out = np.empty((len(paths), 3, size, size), dtype=np.uint8)

    def one(i: int) -> None:
        from PIL import Image

        try:
            with Image.open(paths[i]) as im:
                out[i] = np.asarray(fit(im.convert("RGB"))).transpose(2, 0, 1)
        except Exception as err:  # missing, truncated or not an image
            raise ConfigError(f"{name}: cannot decode {paths[i]} ({one_line(err)}); {how}") from err

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for _ in pool.map(one, range(len(paths))):  # re-raises the first failure
            pass
    return torch.from_numpy(out)
