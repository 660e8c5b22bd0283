"""Shared test helpers: tiny real workloads (no mocks)."""
import os

import pytest

# Keep torch from oversubscribing the 2-core CI machine when tests run Ray workers beside it.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: starts real Ray clusters or launcher subprocesses "
                                       "(deselect with -m 'not slow')")


TINY_SYNTH = {"train_per_class": 12, "test_per_class": 4, "image_size": 8}


@pytest.fixture
def tiny_cfg():
    from engine.config import TrialConfig

    def make(**kw):
        base = dict(dataset="seq-synth", data_args=dict(TINY_SYNTH), method="er", norm="bn",
                    buffer_size=20, minibatch_size=4, bs=4, device="cpu")
        base.update(kw)
        return TrialConfig(**base)

    return make
