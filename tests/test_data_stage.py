"""The launcher's data stage and --prepare_data: every dataset of the grid made ready once,
before Ray, from real files written here; a machine without data refuses in one line."""
import os
import subprocess
import sys
import time
from pathlib import Path

import launcher
from engine.datasets.download import NO_DOWNLOAD_ENV
from test_datasets_formats import write_cifar

ROOT = Path(__file__).resolve().parents[1]
GRID = ["--datasets", "seq-cifar10", "seq-digits", "--models", "er", "--methods", "bn", "--buffer_sizes", "20"]


def test_prepare_data_checks_every_dataset_and_runs_nothing(tmp_path, capsys):
    write_cifar(tmp_path / "data", 10)
    rc = launcher.main([*GRID, "--data_root", str(tmp_path / "data"), "--results_dir", str(tmp_path / "r"),
                        "--prepare_data"])
    out = capsys.readouterr().out.splitlines()
    assert rc == 0
    assert out == [f"seq-cifar10: ready ({tmp_path / 'data'}/cifar-10-batches-py (torchvision format; "
                   "downloaded when missing))",
                   "seq-digits: ready (scikit-learn's bundled digits (no download))"]
    assert not (tmp_path / "r").exists()
    import ray
    assert not ray.is_initialized()


def test_prepare_data_refuses_corrupt_data_in_one_line(tmp_path, capsys):
    folder = write_cifar(tmp_path / "data", 10)["folder"]
    (folder / "test_batch").write_bytes(b"\x80garbage")
    rc = launcher.main([*GRID, "--data_root", str(tmp_path / "data"), "--prepare_data"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "seq-cifar10: cannot read CIFAR-10" in err


def test_trials_never_download():
    from orchestrator import cluster

    assert cluster.WORKER_ENV[NO_DOWNLOAD_ENV] == "1"   # every worker, local or joined


def test_the_users_command_without_data_or_network_ends_in_one_line(tmp_path):
    """Issue 14: `python launcher.py --num_seeds 3 --methods tbbn adab2n --yes` on a machine with
    no data. Proxies that refuse stand in for "no network" where this machine has one."""
    env = {**os.environ, "https_proxy": "http://127.0.0.1:1", "http_proxy": "http://127.0.0.1:1",
           "no_proxy": "", "HOME": str(tmp_path)}
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(ROOT / "launcher.py"), "--num_seeds", "3", "--methods", "tbbn",
                           "adab2n", "--yes"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    wall = time.monotonic() - t0
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith("error: seq-cifar10: no ") and "cifar-10-python.tar.gz" in proc.stderr
    assert not (tmp_path / "results").exists()
    assert wall < 60  # ~5 s of CPU; generous for a loaded 2-core CI machine
