"""seq-imagenet100's loader on a small generated ImageFolder tree (100 classes, solid colours)."""
import pytest
import torch

from engine.config import TrialConfig
from engine.datasets import build_dataset
from engine.datasets.imagenet100 import ICARL_ORDER
from engine.errors import ConfigError

Image = pytest.importorskip("PIL.Image")


def wnid(i):
    return f"n{i:08d}"


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """<root>/imagenet100/{classes.txt, train/<wnid>/, val/<wnid>/}: class i's images are solid
    (R, G, B) = (i, 200 - i, 7); one extra, unlisted class; mixed sizes and formats."""
    root = tmp_path_factory.mktemp("data")
    folder = root / "imagenet100"
    for i in range(101):                                   # class 100 is not in the list
        for split, n, size in (("train", 2, (20, 12)), ("val", 1, (9, 14))):
            d = folder / split / wnid(i)
            d.mkdir(parents=True)
            for k in range(n):
                ext = "JPEG" if (i, k) == (99, 1) else "png"   # lossy: kept out of the checked tasks
                Image.new("RGB", size, (i, 200 - i, 7)).save(d / f"img{k}.{ext}")
        (folder / "train" / wnid(i) / "notes.txt").write_text("not an image")
    (folder / "classes.txt").write_text("# ImageNet-100\n" + "\n".join(wnid(i) for i in range(100)) + "\n")
    return root


def load(root, **data_args):
    cfg = TrialConfig(dataset="seq-imagenet100", data_root=str(root), setting="offline", method="finetune",
                      buffer_mode="herding", buffer_size=2000, data_args={"image_size": 8, **data_args},
                      device="cpu").resolved()
    return cfg, build_dataset(cfg, torch.device("cpu"))


def test_imagenet100_loads_the_listed_classes_in_tbbn_order(tree):
    cfg, ds = load(tree)
    assert (cfg.backbone, cfg.epochs, cfg.lr_milestones, cfg.n_tasks) == ("resnet18_imagenet", 100, (40, 80), 10)
    assert ds.n_classes == 100 and ds.input_shape == (3, 8, 8) and ds.task_sizes == [10] * 10
    x = torch.cat([t.x_train for t in ds.tasks])
    assert x.shape == (200, 3, 8, 8) and x.dtype == torch.uint8          # the unlisted class is not read
    first = ds.tasks[0]
    # seed 0 + icarl_order: task 0 holds the list's classes 68, 56, 78, ... (FACIL's class_order)
    originals = first.x_train[:, 0].float().mean((1, 2)).round().long()
    assert sorted(set(originals.tolist())) == sorted(ICARL_ORDER[:10])
    assert all(int(o) == ICARL_ORDER[int(y)] for o, y in zip(originals, first.y_train))
    assert first.x_test.shape == (10, 3, 8, 8)
    assert (first.x_train[:, 2] == 7).all()                               # solid colour survives resize + crop


def test_imagenet100_list_order_and_cache(tree):
    _, ds = load(tree, icarl_order=False)
    t0 = ds.tasks[0]
    assert t0.x_train[:, 0].float().mean((1, 2)).round().long().tolist() == t0.y_train.tolist()
    assert list((tree / "imagenet100").glob(".cache_imagenet100_8_*.pt"))     # decoded once, cached
    _, again = load(tree, icarl_order=False)
    assert torch.equal(again.tasks[3].x_train, ds.tasks[3].x_train)


def test_imagenet100_errors_name_the_missing_piece(tree, tmp_path):
    with pytest.raises(ConfigError, match="no class list"):
        load(tmp_path)
    (tmp_path / "imagenet100").mkdir()
    (tmp_path / "imagenet100" / "classes.txt").write_text("n1\nn2\n")
    with pytest.raises(ConfigError, match="no images of class n1"):
        load(tmp_path, icarl_order=False)
    (tmp_path / "two.txt").write_text(f"{wnid(1)}\n{wnid(2)}\n")
    with pytest.raises(ConfigError, match="icarl_order needs the 100-class list"):
        load(tree, class_list=str(tmp_path / "two.txt"), folder=str(tree / "imagenet100"))
