"""Small file helpers shared by the on-disk dataset loaders."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no cross-process lock, concurrent trials may fetch twice
    fcntl = None  # type: ignore[assignment]


def one_line(err: BaseException) -> str:
    """An exception as one short line, to embed in a ConfigError message."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


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
