"""The on-disk dataset families, read from small files written here in each real format.

Nothing touches the network: CIFAR downloads come from a local HTTP server on 127.0.0.1.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import os
import pickle
import shutil
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from engine.config import TrialConfig
from engine import datasets
from engine.datasets import REGISTRY, build_dataset, files, resolve_options, tinyimg
from engine.datasets.download import NO_DOWNLOAD_ENV, Archive
from engine.datasets.augment import random_crop, random_hflip
from engine.errors import ConfigError


@pytest.fixture(autouse=True)
def downloads_allowed_here(monkeypatch):
    """A local Ray started earlier in this process (cluster.start_local) leaves its workers'
    no-download switch in os.environ; these tests decide it themselves."""
    monkeypatch.delenv(NO_DOWNLOAD_ENV, raising=False)


CPU = torch.device("cpu")


def build(name: str, root: Path, seed: int = 0, **data_args):
    cfg = TrialConfig(dataset=name, data_root=str(root), seed=seed,
                      data_args=resolve_options(name, data_args))
    return build_dataset(cfg, CPU)


def load_raw(name: str, root: Path, **data_args):
    return REGISTRY.get(name).load(root, resolve_options(name, data_args))


def expected_order(n_classes: int, seed: int) -> torch.Tensor:
    """algorithms.md §1, restated: natural order for seed 0, else a permutation seeded 42 + seed."""
    if seed == 0:
        return torch.arange(n_classes)
    return torch.randperm(n_classes, generator=torch.Generator().manual_seed(42 + seed))


def check_tasks(ds, raw, n_tasks: int, per_task: int, seed: int) -> None:
    """Task k holds exactly the images of original classes order[k*per_task:(k+1)*per_task]."""
    order = expected_order(raw.n_classes, seed)
    assert torch.equal(ds.class_order, order)
    assert ds.n_tasks == len(ds.tasks) == n_tasks and ds.n_classes == raw.n_classes
    for k, task in enumerate(ds.tasks):
        assert torch.equal(task.classes, torch.arange(k * per_task, (k + 1) * per_task))
        originals = order[k * per_task:(k + 1) * per_task]
        for split in ("train", "test"):
            x, y = getattr(task, f"x_{split}"), getattr(task, f"y_{split}")
            raw_x, raw_y = getattr(raw, f"x_{split}"), getattr(raw, f"y_{split}")
            mask = torch.isin(raw_y, originals)
            assert x.dtype == torch.uint8 and y.dtype == torch.int64
            assert torch.equal(x, raw_x[mask])
            assert torch.equal(order[y], raw_y[mask])  # remapped label -> original class


def assert_one_line_error(excinfo, *fragments: str) -> None:
    msg = str(excinfo.value)
    assert isinstance(excinfo.value, ConfigError)
    assert "\n" not in msg
    for fragment in fragments:
        assert fragment in msg, (fragment, msg)


# ---- CIFAR ----------------------------------------------------------------------------------
def write_cifar(root: Path, n_classes: int, train_per_class: int = 2, test_per_class: int = 2) -> dict:
    """torchvision's python-version CIFAR files; returns the images (NCHW) and labels written."""
    rng = np.random.default_rng(n_classes)
    ten = n_classes == 10
    folder = root / ("cifar-10-batches-py" if ten else "cifar-100-python")
    folder.mkdir(parents=True)
    label_key = "labels" if ten else "fine_labels"

    def batch(per_class: int):
        y = rng.permutation(np.repeat(np.arange(n_classes), per_class))
        return rng.integers(0, 256, (len(y), 3072), dtype=np.uint8), y

    def dump(name: str, x: np.ndarray, y: np.ndarray) -> None:
        entry = {"batch_label": name, "data": x, label_key: [int(v) for v in y],
                 "filenames": [f"{i}.png" for i in range(len(y))]}
        if not ten:
            entry["coarse_labels"] = [int(v) // 5 for v in y]
        with open(folder / name, "wb") as fh:
            pickle.dump(entry, fh)

    train_names = [f"data_batch_{i}" for i in range(1, 6)] if ten else ["train"]
    xs, ys = [], []
    for name in train_names:  # CIFAR-10 spreads the train set over five batches
        x, y = batch(train_per_class)
        dump(name, x, y)
        xs.append(x)
        ys.append(y)
    x_test, y_test = batch(test_per_class)
    dump("test_batch" if ten else "test", x_test, y_test)
    names = [f"class{i}" for i in range(n_classes)]
    meta = {"label_names": names} if ten else {"fine_label_names": names, "coarse_label_names": names[:20]}
    with open(folder / ("batches.meta" if ten else "meta"), "wb") as fh:
        pickle.dump(meta, fh)
    return {"x_train": np.concatenate(xs).reshape(-1, 3, 32, 32), "y_train": np.concatenate(ys),
            "x_test": x_test.reshape(-1, 3, 32, 32), "y_test": y_test, "folder": folder}


@pytest.mark.parametrize("name,n_classes,n_tasks", [("seq-cifar10", 10, 5), ("seq-cifar100", 100, 10)])
def test_cifar_reads_torchvision_format(tmp_path, name, n_classes, n_tasks):
    written = write_cifar(tmp_path, n_classes)
    raw = load_raw(name, tmp_path, download=False)
    assert raw.n_classes == n_classes
    assert raw.x_train.shape == (len(written["y_train"]), 3, 32, 32) and raw.x_train.dtype == torch.uint8
    assert raw.y_train.dtype == torch.int64
    for split in ("train", "test"):  # exact pixel and label round trip, in file order
        assert np.array_equal(getattr(raw, f"x_{split}").numpy(), written[f"x_{split}"])
        assert np.array_equal(getattr(raw, f"y_{split}").numpy(), written[f"y_{split}"])
    for seed in (0, 1):
        ds = build(name, tmp_path, seed=seed, download=False)
        check_tasks(ds, raw, n_tasks, n_classes // n_tasks, seed)
        assert ds.input_shape == (3, 32, 32)
    spec = REGISTRY.get(name)
    assert (spec.crop_padding, spec.flip, spec.default_backbone, spec.n_tasks) == (4, True, "resnet18", n_tasks)


def test_cifar_download_option_is_validated():
    assert resolve_options("seq-cifar10", {"download": "false"}) == {"download": False}
    assert resolve_options("seq-cifar100", {}) == {"download": True}
    with pytest.raises(ConfigError, match="download"):
        resolve_options("seq-cifar10", {"downlaod": False})


def test_cifar_missing_without_download(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_raw("seq-cifar10", tmp_path, download=False)
    assert_one_line_error(e, "seq-cifar10", str(tmp_path / "cifar-10-batches-py"), "download=False",
                          "cifar-10-python.tar.gz", "--data_root")


@pytest.fixture
def cifar_server(tmp_path):
    """A local HTTP server (127.0.0.1) publishing a small CIFAR-10 tarball in the real layout, and
    the seq-cifar10 spec pointed at it (the spec's archive is the seam); records every request."""
    write_cifar(tmp_path / "src", 10)
    www = tmp_path / "www"
    www.mkdir()
    with tarfile.open(www / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kw):
            super().__init__(*args, directory=str(www), **kw)

        def do_GET(self):
            requests.append(self.path)
            time.sleep(0.2)  # slow enough that concurrent callers overlap
            super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    md5 = hashlib.md5((www / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    spec = dataclasses.replace(REGISTRY.get("seq-cifar10"), archive=Archive(url, md5, "cifar-10-batches-py"))
    try:
        yield spec, requests
    finally:
        server.shutdown()
        server.server_close()


def test_cifar_published_checksums_are_torchvisions():
    from torchvision.datasets import CIFAR10, CIFAR100

    for name, cls in (("seq-cifar10", CIFAR10), ("seq-cifar100", CIFAR100)):
        archive = REGISTRY.get(name).archive
        assert (archive.url, archive.md5, archive.folder) == (cls.url, cls.tgz_md5, cls.base_folder)


def test_cifar_download_checks_the_md5_and_moves_the_folder_in_whole(tmp_path, cifar_server):
    spec, requests = cifar_server
    root = tmp_path / "data"
    timeout = socket.getdefaulttimeout()
    datasets.prepare(spec, root, {"download": True})
    assert socket.getdefaulttimeout() == timeout  # bounded waits during the download only
    assert spec.load(root, {"download": True}).x_test.shape == (20, 3, 32, 32)
    assert sorted(p.name for p in root.iterdir()) == [".cifar-10-batches-py.lock", "cifar-10-batches-py"]
    n = len(requests)
    datasets.prepare(spec, root, {"download": True})
    assert len(requests) == n  # present: not fetched again


def test_cifar_download_with_a_wrong_md5_is_refused_and_keeps_nothing(tmp_path, cifar_server):
    spec, _ = cifar_server
    bad = dataclasses.replace(spec, archive=dataclasses.replace(spec.archive, md5="0" * 32))
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as e:
        datasets.prepare(bad, root, {"download": True})
    assert_one_line_error(e, "seq-cifar10", "download failed", "0" * 32, "not the published", "--data_root")
    assert not root.exists()  # no folder, no temp files, no lock: the data root as it was


def test_two_concurrent_prepares_download_once(tmp_path, cifar_server):
    spec, requests = cifar_server
    datasets.prepare(spec, tmp_path / "one", {"download": True})
    per_download = len(requests)
    root, start, errors = tmp_path / "data", threading.Barrier(2), []

    def prepare():
        start.wait()
        try:
            datasets.prepare(spec, root, {"download": True})
        except Exception as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=prepare) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(requests) == 2 * per_download
    assert spec.load(root, {"download": False}).n_classes == 10


def test_cifar_failed_download_is_one_config_error(tmp_path):
    with socket.socket() as s:  # a port nobody listens on: connection refused, at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    archive = Archive(f"http://127.0.0.1:{port}/cifar-100-python.tar.gz", "0" * 32, "cifar-100-python")
    spec = dataclasses.replace(REGISTRY.get("seq-cifar100"), archive=archive)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "other").touch()   # a data root already in use keeps what it had
    with pytest.raises(ConfigError) as e:
        datasets.prepare(spec, tmp_path / "data", {"download": True})
    assert_one_line_error(e, "seq-cifar100", "cifar-100-python", "download failed", "ConnectionRefusedError",
                          "--data_root")
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["other"]


def test_cifar_is_never_downloaded_where_downloads_are_off(tmp_path, cifar_server, monkeypatch):
    spec, requests = cifar_server
    monkeypatch.setenv(NO_DOWNLOAD_ENV, "1")  # what sweep trials see
    with pytest.raises(ConfigError) as e:
        datasets.prepare(spec, tmp_path, {"download": True})
    assert_one_line_error(e, "seq-cifar10", "missing data_batch_1", "--data_root")
    assert requests == []


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad_label", "missing_file"])
def test_cifar_corrupt_files_are_one_config_error(tmp_path, damage):
    folder = write_cifar(tmp_path, 10)["folder"]
    target = folder / "data_batch_3"
    if damage == "garbage":
        target.write_bytes(b"not a pickle at all")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:5000])
    elif damage == "bad_label":
        entry = pickle.loads(target.read_bytes())
        entry["labels"][0] = 10
        target.write_bytes(pickle.dumps(entry))
    else:
        (folder / "batches.meta").unlink()
    with pytest.raises(ConfigError) as e:
        load_raw("seq-cifar10", tmp_path, download=False)
    expected = {"garbage": "cannot read", "truncated": "cannot read", "bad_label": "labels 0..9",
                "missing_file": "missing batches.meta"}[damage]
    assert_one_line_error(e, "seq-cifar10", str(folder), expected, "--data_root")


# ---- TinyImageNet ---------------------------------------------------------------------------
def _jpeg(path: Path, rng, size: int = 64, mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    shape = (size, size, 3) if mode == "RGB" else (size, size)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, quality=90)


def _pil_pixels(path: Path) -> np.ndarray:
    """What a reader should get: PIL's RGB decode, resized to 64 only when it is not 64x64."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        if im.size != (64, 64):
            im = im.resize((64, 64), Image.BILINEAR)
        return np.asarray(im).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory) -> Path:
    """A tiny-imagenet-200 tree: 200 classes, 1-2 train JPEGs and 1 val JPEG each."""
    root = tmp_path_factory.mktemp("tiny")
    folder = root / "tiny-imagenet-200"
    rng = np.random.default_rng(0)
    wnids = [f"n{v:08d}" for v in rng.choice(10**8, 200, replace=False)]  # file order is not sorted
    folder.mkdir()
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    lines = []
    for i, w in enumerate(wnids):
        images = folder / "train" / w / "images"
        _jpeg(images / f"{w}_0.JPEG", rng)
        if i % 4 == 0:
            _jpeg(images / f"{w}_1.JPEG", rng)
        (folder / "train" / w / f"{w}_boxes.txt").write_text("ignored\n")
        _jpeg(folder / "val" / "images" / f"val_{i}.JPEG", rng)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    _jpeg(folder / "train" / wnids[0] / "images" / f"{wnids[0]}_2.JPEG", rng, mode="L")  # grayscale
    _jpeg(folder / "train" / wnids[1] / "images" / f"{wnids[1]}_2.JPEG", rng, size=80)   # odd size
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


def _copy(root: Path, dst: Path) -> Path:
    shutil.copytree(root / "tiny-imagenet-200", dst / "tiny-imagenet-200",
                    ignore=shutil.ignore_patterns(".cache*"))
    return dst


def test_tinyimg_reads_the_standard_layout(tiny_root):
    folder = tiny_root / "tiny-imagenet-200"
    wnids = sorted((folder / "wnids.txt").read_text().split())
    raw = load_raw("seq-tinyimg", tiny_root)
    files = [(c, p) for c, w in enumerate(wnids) for p in sorted((folder / "train" / w / "images").iterdir())]
    assert raw.n_classes == 200 and raw.x_train.shape == (len(files), 3, 64, 64) and raw.x_train.dtype == torch.uint8
    assert raw.y_train.tolist() == [c for c, _ in files]  # class id = rank of the wnid in sorted order
    assert np.array_equal(raw.x_train.numpy(), np.stack([_pil_pixels(p) for _, p in files]))
    rows = [line.split("\t") for line in (folder / "val" / "val_annotations.txt").read_text().splitlines()]
    assert raw.y_test.tolist() == [wnids.index(w) for _, w, *_ in rows]
    assert np.array_equal(raw.x_test.numpy(), np.stack([_pil_pixels(folder / "val" / "images" / f) for f, *_ in rows]))
    for seed in (0, 1):
        ds = build("seq-tinyimg", tiny_root, seed=seed)
        check_tasks(ds, raw, 10, 20, seed)


def test_tinyimg_cache_is_written_reused_and_rebuilt(tiny_root, tmp_path, monkeypatch):
    root = _copy(tiny_root, tmp_path)
    folder = root / "tiny-imagenet-200"
    cache = folder / ".cache_uint8.pt"
    first = load_raw("seq-tinyimg", root)
    assert cache.is_file() and not list(folder.glob("*.tmp"))

    real_decode = tinyimg.decode_images
    decoded = []

    def counting_decode(paths, size, how):
        decoded.append(len(paths))
        return real_decode(paths, size, how)

    monkeypatch.setattr(tinyimg, "decode_images", counting_decode)
    again = load_raw("seq-tinyimg", root)  # served by the cache
    assert decoded == [] and torch.equal(again.x_train, first.x_train) and torch.equal(again.x_test, first.x_test)

    cache.write_bytes(b"garbage, not a torch file")  # corrupt -> rebuilt
    assert torch.equal(load_raw("seq-tinyimg", root).x_train, first.x_train)
    assert len(decoded) == 2 and torch.load(cache, weights_only=True)["x_train"].shape == first.x_train.shape

    wnid = sorted((folder / "wnids.txt").read_text().split())[5]  # new file -> stale cache rebuilt
    _jpeg(folder / "train" / wnid / "images" / f"{wnid}_9.JPEG", np.random.default_rng(1))
    grown = load_raw("seq-tinyimg", root)
    assert len(grown.y_train) == len(first.y_train) + 1 and (grown.y_train == 5).sum() == (first.y_train == 5).sum() + 1
    assert len(decoded) == 4


def test_decode_cache_is_durable_and_a_failed_write_only_warns(tiny_root, tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    root = _copy(tiny_root, tmp_path)
    load_raw("seq-tinyimg", root)
    assert synced, "the decode cache is renamed into place without an fsync"

    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the cache's folder should be")
    with pytest.warns(UserWarning, match="could not write the decode cache"):
        files.write_cache(blocked / ".cache.pt", {"x": torch.zeros(1)}, "seq-tinyimg")


def test_tinyimg_missing_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_raw("seq-tinyimg", tmp_path)
    assert_one_line_error(e, "seq-tinyimg", str(tmp_path / "tiny-imagenet-200"), "wnids.txt",
                          tinyimg.URL, "--data_root")


@pytest.mark.parametrize("damage", ["corrupt_jpeg", "missing_val_image", "unknown_wnid", "empty_class",
                                    "binary_wnids"])
def test_tinyimg_damaged_files(tiny_root, tmp_path, damage):
    root = _copy(tiny_root, tmp_path)
    folder = root / "tiny-imagenet-200"
    wnid = sorted((folder / "wnids.txt").read_text().split())[3]
    ann = folder / "val" / "val_annotations.txt"
    if damage == "corrupt_jpeg":
        bad = folder / "train" / wnid / "images" / f"{wnid}_0.JPEG"
        bad.write_bytes(bad.read_bytes()[:40])
        expected = ("cannot decode", str(bad))
    elif damage == "missing_val_image":
        (folder / "val" / "images" / "val_7.JPEG").unlink()
        expected = ("cannot decode", "val_7.JPEG")
    elif damage == "unknown_wnid":
        ann.write_text(ann.read_text() + "val_x.JPEG\tn99999999\t0\t0\t1\t1\n")
        expected = ("n99999999", "line 201")
    elif damage == "empty_class":
        shutil.rmtree(folder / "train" / wnid / "images")
        expected = ("no training images", wnid)
    else:
        (folder / "wnids.txt").write_bytes(b"\xff\xfe\x00 not text")
        expected = ("cannot read", "wnids.txt")
    with pytest.raises(ConfigError) as e:
        load_raw("seq-tinyimg", root)
    assert_one_line_error(e, "seq-tinyimg", *expected)


# ---- Mini-ImageNet --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mini_root(tmp_path_factory) -> Path:
    """mini-imagenet-cache-{train,val,test}.pkl with 64/16/20 classes x 6 images of 84x84."""
    root = tmp_path_factory.mktemp("mini")
    folder = root / "mini-imagenet"
    folder.mkdir()
    rng = np.random.default_rng(0)
    wnids = [f"n{v:08d}" for v in rng.choice(10**8, 100, replace=False)]
    start = 0
    for split, n in (("train", 64), ("val", 16), ("test", 20)):
        names = wnids[start:start + n]
        start += n
        images = rng.integers(0, 256, (6 * n, 84, 84, 3), dtype=np.uint8)
        order = rng.permutation(6 * n)  # rows of a class need not be contiguous or ascending
        class_dict = {w: order[6 * i:6 * i + 6].tolist() for i, w in enumerate(names)}
        with open(folder / f"mini-imagenet-cache-{split}.pkl", "wb") as fh:
            pickle.dump({"image_data": images, "class_dict": class_dict}, fh)
    return root


def _mini_expected(root: Path):
    parts = {}
    for split in ("train", "val", "test"):
        with open(root / "mini-imagenet" / f"mini-imagenet-cache-{split}.pkl", "rb") as fh:
            blob = pickle.load(fh)
        parts.update({w: blob["image_data"][rows] for w, rows in blob["class_dict"].items()})
    wnids = sorted(parts)
    x_train = np.concatenate([parts[w][:5] for w in wnids]).transpose(0, 3, 1, 2)
    x_test = np.concatenate([parts[w][5:] for w in wnids]).transpose(0, 3, 1, 2)
    return x_train, np.repeat(np.arange(100), 5), x_test, np.arange(100)


def test_miniimg_reads_the_pickle_caches(mini_root):
    raw = load_raw("seq-miniimg", mini_root)
    x_train, y_train, x_test, y_test = _mini_expected(mini_root)
    assert raw.n_classes == 100 and raw.x_train.shape == (500, 3, 84, 84) and raw.x_test.shape == (100, 3, 84, 84)
    assert raw.x_train.dtype == torch.uint8 and raw.y_train.dtype == torch.int64
    assert np.array_equal(raw.x_train.numpy(), x_train) and np.array_equal(raw.y_train.numpy(), y_train)
    assert np.array_equal(raw.x_test.numpy(), x_test) and np.array_equal(raw.y_test.numpy(), y_test)
    for seed in (0, 1):
        check_tasks(build("seq-miniimg", mini_root, seed=seed), raw, 20, 5, seed)


def test_miniimg_accepts_learn2learn_validation_name(mini_root, tmp_path):
    shutil.copytree(mini_root / "mini-imagenet", tmp_path / "mini-imagenet")
    folder = tmp_path / "mini-imagenet"
    (folder / "mini-imagenet-cache-val.pkl").rename(folder / "mini-imagenet-cache-validation.pkl")
    assert torch.equal(load_raw("seq-miniimg", tmp_path).x_test, load_raw("seq-miniimg", mini_root).x_test)


def test_miniimg_reads_mammoth_arrays_first(mini_root, tmp_path):
    shutil.copytree(mini_root / "mini-imagenet", tmp_path / "mini-imagenet")
    folder = tmp_path / "mini-imagenet"
    rng = np.random.default_rng(3)
    arrays = {"train_x": rng.integers(0, 256, (200, 84, 84, 3), dtype=np.uint8),
              "train_y": np.repeat(np.arange(100), 2), "test_x": rng.integers(0, 256, (100, 84, 84, 3), dtype=np.uint8),
              "test_y": np.arange(100)}
    for name, value in arrays.items():
        np.save(folder / f"{name}.npy", value)
    raw = load_raw("seq-miniimg", tmp_path)
    assert np.array_equal(raw.x_train.numpy(), arrays["train_x"].transpose(0, 3, 1, 2))
    assert np.array_equal(raw.y_test.numpy(), arrays["test_y"]) and raw.y_train.dtype == torch.int64
    np.save(folder / "test_y.npy", np.full(100, 100))  # label out of range
    with pytest.raises(ConfigError) as e:
        load_raw("seq-miniimg", tmp_path)
    assert_one_line_error(e, "seq-miniimg", "test_x.npy", "labels 0..99")


def test_miniimg_missing_directory(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_raw("seq-miniimg", tmp_path)
    assert_one_line_error(e, "seq-miniimg", str(tmp_path / "mini-imagenet"), "mini-imagenet-cache-train.pkl",
                          "train_x.npy", "--data_root")


@pytest.mark.parametrize("damage", ["garbage", "truncated", "no_image_data", "missing_test"])
def test_miniimg_damaged_files(mini_root, tmp_path, damage):
    shutil.copytree(mini_root / "mini-imagenet", tmp_path / "mini-imagenet")
    target = tmp_path / "mini-imagenet" / "mini-imagenet-cache-val.pkl"
    if damage == "garbage":
        target.write_bytes(b"\x80\x04garbage")
    elif damage == "truncated":
        target.write_bytes(target.read_bytes()[:100_000])
    elif damage == "no_image_data":
        target.write_bytes(pickle.dumps({"class_dict": {}}))
    else:
        (tmp_path / "mini-imagenet" / "mini-imagenet-cache-test.pkl").unlink()
    with pytest.raises(ConfigError) as e:
        load_raw("seq-miniimg", tmp_path)
    expected = ("missing mini-imagenet-cache-test.pkl",) if damage == "missing_test" else ("cannot read", str(target))
    assert_one_line_error(e, "seq-miniimg", *expected)


# ---- seq-digits -----------------------------------------------------------------------------
def test_digits_split_and_tasks(tmp_path):
    raw = load_raw("seq-digits", tmp_path)
    assert raw.x_train.dtype == raw.x_test.dtype == torch.uint8 and raw.x_train.shape[1:] == (1, 8, 8)
    assert len(raw.y_train) + len(raw.y_test) == 1797
    for c in range(10):  # a stratified 20% of every class is test
        n_train, n_test = int((raw.y_train == c).sum()), int((raw.y_test == c).sum())
        assert n_test == (n_train + n_test) // 5
    ds = build("seq-digits", tmp_path)
    check_tasks(ds, raw, 5, 2, seed=0)
    assert ds.n_tasks == 5 and all(len(t.classes) == 2 for t in ds.tasks)


# ---- batched augmentation -------------------------------------------------------------------
def _crop_offsets(x: torch.Tensor, out: torch.Tensor, p: int) -> list[tuple[int, int]]:
    """For every sample, the (top, left) windows of its padded input equal to its output."""
    padded = torch.nn.functional.pad(x, (p, p, p, p))
    h, w = x.shape[2:]
    found = []
    for i in range(len(x)):
        hits = [(t, l) for t in range(2 * p + 1) for l in range(2 * p + 1)
                if torch.equal(padded[i, :, t:t + h, l:l + w], out[i])]
        assert hits, f"sample {i} is not a crop of its padded input"
        found.append(hits[0])
    return found


def test_random_crop_is_a_valid_crop_per_sample():
    torch.manual_seed(0)
    x = torch.randint(1, 256, (64, 3, 10, 12), dtype=torch.uint8)  # nonzero, so padding is visible
    out = random_crop(x, 2)
    assert out.shape == x.shape and out.dtype == torch.uint8
    offsets = _crop_offsets(x, out, 2)
    assert len(set(offsets)) > 5  # independent draws per sample
    assert random_crop(x, 0) is x


def test_random_crop_draws_differ_for_identical_samples():
    torch.manual_seed(1)
    x = torch.randint(1, 256, (1, 1, 8, 8), dtype=torch.uint8).expand(32, 1, 8, 8).contiguous()
    out = random_crop(x, 3)
    assert len({tuple(o.flatten().tolist()) for o in out}) > 5


def test_random_hflip_mirrors_exactly():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (64, 3, 5, 7), dtype=torch.uint8)
    out = random_hflip(x)
    assert out.shape == x.shape and out.dtype == x.dtype
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all())
    assert 0 < int(mirrored.sum()) < 64 and int((same & ~mirrored).sum()) > 0  # both outcomes occur
