"""A Ray worker runs hundreds of trials in one process: each must leave nothing behind."""
import gc
import resource

import pytest
import torch

from engine.trainer import run_trial


def live_tensors():
    gc.collect()
    return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))


@pytest.mark.parametrize("model", ["derpp", "lucir"])
def test_a_finished_trial_frees_its_network_buffer_and_data(tmp_path, tiny_cfg, model):
    setting = "offline" if model == "lucir" else "online"
    run_trial(tiny_cfg(method=model, setting=setting, seed=0), tmp_path / "warm")  # lazy caches fill once
    before = live_tensors()
    run_trial(tiny_cfg(method=model, setting=setting, seed=1), tmp_path / "one")
    assert live_tensors() == before, "tensors of a finished trial are still alive"


def test_thirty_trials_in_one_process_do_not_grow_resident_memory(tmp_path, tiny_cfg):
    def peak_kib():  # ru_maxrss is KiB on Linux; a leak raises the peak trial after trial
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    cfg = dict(method="derpp", norm="tbbn")
    for seed in range(5):
        run_trial(tiny_cfg(seed=seed, **cfg), tmp_path / f"warm{seed}")
    start = peak_kib()
    for seed in range(5, 30):
        run_trial(tiny_cfg(seed=seed, **cfg), tmp_path / f"t{seed}")
    assert (peak_kib() - start) / 25 < 1024, "resident memory grows by 1 MiB or more per trial"
