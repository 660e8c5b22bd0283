"""Every normalization layer in every online method: a short real trial with finite metrics."""
import math

import pytest

from engine.norms import REGISTRY as NORMS
from engine.trainer import run_trial

ONLINE_METHODS = ["sgd", "joint", "er", "er_ace", "der", "derpp"]


@pytest.mark.parametrize("norm", NORMS.names())
@pytest.mark.parametrize("model", ONLINE_METHODS)
def test_layer_in_method_gives_finite_metrics(tmp_path, tiny_cfg, norm, model):
    norm_args = {"ada_t0": 1} if norm == "adab2n" else {}   # the regularizer is exercised at t = 1
    # the online protocol's batch (10 + 10) on 16 px images: every layer sees 2x2 maps or more
    cfg = tiny_cfg(model=model, norm=norm, norm_args=norm_args, n_tasks=2, bs=10, minibatch_size=10,
                   data_args={"train_per_class": 10, "test_per_class": 4, "image_size": 16})
    result = run_trial(cfg, tmp_path)
    assert result["config"]["norm"] == norm
    for kind in ("class_il", "task_il"):
        assert all(math.isfinite(v) for v in result["metrics"][kind].values()), result["metrics"]
    assert 0 <= result["metrics"]["class_il"]["faa"] <= 100


def test_instance_norm_on_1x1_maps_is_a_clear_error(tmp_path, tiny_cfg):
    from engine.errors import ConfigError

    with pytest.raises(ConfigError, match=r"norm in needs more than one spatial position .* sees 1x1"):
        run_trial(tiny_cfg(norm="in"), tmp_path)   # 8 px images reach 1x1 in the last stage
