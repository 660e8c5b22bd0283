"""Pre-flight: each distinct network of a grid built once on the meta device, without data."""
import pytest

from engine.errors import ConfigError
from orchestrator import sweep
from orchestrator.preflight import check_builds

SYNTH = {"datasets": ["seq-synth"], "models": ["er"], "methods": ["bn"], "seeds": [0, 1],
         "data_args": ["seq-synth:image_size=8"]}


def configs(**flags):
    return [t.config for t in sweep.expand(sweep.spec_from_flags({**SYNTH, **flags}))]


def test_trials_that_differ_only_in_training_share_one_build():
    cfgs = configs(buffer_sizes=[20, 50], trial_args=["lr=0.1|0.2"])
    assert len(cfgs) == 8 and check_builds(cfgs) == 1


def test_a_herding_buffer_below_the_class_count_is_refused_when_the_grid_expands():
    with pytest.raises(ConfigError, match="buffer_size=5 must be at least the 10 classes of seq-synth"):
        configs(buffer_mode="herding", buffer_sizes=[200, 5])     # before any network is built


def test_a_layer_that_fails_on_the_grids_shapes_is_refused_without_data():
    assert check_builds(configs(methods=["in"], data_args=["seq-synth:image_size=16"])) == 1
    with pytest.raises(ConfigError, match="needs more than one spatial position"):
        check_builds(configs(methods=["in"], data_args=["seq-synth:image_size=4"]))
