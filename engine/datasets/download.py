"""Fetch a dataset's published archive once: under a file lock, checked against its md5, moved into
place atomically. A dataset that can be downloaded names its `Archive` in its `DatasetSpec`.

The archive is downloaded and unpacked in a temp folder beside the target, so the target folder
appears whole or not at all; concurrent callers wait on the lock and then find it there. Sweep
trials never download: the launcher prepares the data before Ray starts and sets
`NO_DOWNLOAD_ENV` for the workers.
"""
from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from engine.datasets.files import file_lock
from engine.errors import ConfigError, one_line

CONNECT_TIMEOUT_S = 5.0   # no network -> fail fast instead of hanging
READ_TIMEOUT_S = 30.0     # a stalled transfer fails instead of hanging forever
NO_DOWNLOAD_ENV = "NORMSWEEP_NO_DOWNLOAD"
DEFAULT_PORTS = {"https": 443, "http": 80}


@dataclass(frozen=True)
class Archive:
    url: str
    md5: str          # of the archive as published
    folder: str       # what it unpacks to under the data root

    @property
    def filename(self) -> str:
        return os.path.basename(urlparse(self.url).path)


def downloads_allowed() -> bool:
    return not os.environ.get(NO_DOWNLOAD_ENV)


def fetch(name: str, archive: Archive, root: Path) -> None:
    """`root/archive.folder` from the archive, unless it is there already (one line on failure)."""
    target = root / archive.folder
    how = f"download {archive.url} and untar it into {root}, or pass --data_root"
    made_root, lock = not root.exists(), root / f".{archive.folder}.lock"
    try:
        root.mkdir(parents=True, exist_ok=True)
        with file_lock(lock):
            if not target.exists():  # another process may have fetched it while we waited
                _download_into(archive, root)
    except Exception as err:  # no network, full disk, bad archive: one message for all
        # leave the data root as it was: no lock file, and no empty folder we made for it
        with contextlib.suppress(OSError):
            lock.unlink(missing_ok=True)
            if made_root:
                root.rmdir()
        detail = str(err) if isinstance(err, ConfigError) else one_line(err)
        raise ConfigError(f"{name}: no {target} and its download failed ({detail}); {how}") from err


def _first_hop(url: str) -> tuple[str, int]:
    """Where the download connects first: the proxy urllib will use for it, else the server."""
    parts = urlparse(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(parts.hostname or ""):
        parts = urlparse(proxy if "://" in proxy else f"http://{proxy}")
    return parts.hostname or "", parts.port or DEFAULT_PORTS.get(parts.scheme, 443)


def _download_into(archive: Archive, root: Path) -> None:
    with tempfile.TemporaryDirectory(dir=root, prefix=f".{archive.folder}.") as tmp:
        socket.create_connection(_first_hop(archive.url), timeout=CONNECT_TIMEOUT_S).close()
        # only now: importing torchvision costs ~2 s, which a machine without network never pays
        from torchvision.datasets.utils import calculate_md5, download_url, extract_archive

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(READ_TIMEOUT_S)  # process-wide (torchvision's urlopen has none), so restored
        try:
            download_url(archive.url, tmp, archive.filename)  # with a progress bar
        finally:
            socket.setdefaulttimeout(old)
        got = calculate_md5(Path(tmp) / archive.filename)
        if got != archive.md5:
            raise ConfigError(f"md5 {got} of {archive.url} is not the published {archive.md5}; nothing kept")
        extract_archive(str(Path(tmp) / archive.filename), str(Path(tmp) / "x"))
        unpacked = Path(tmp) / "x" / archive.folder
        if not unpacked.is_dir():
            raise ConfigError(f"the archive from {archive.url} holds no {archive.folder}/")
        os.replace(unpacked, root / archive.folder)  # atomic: the folder appears whole
