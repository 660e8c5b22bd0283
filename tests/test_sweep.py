"""Grid expansion, trial ids, run names, presets, GPU choice, the progress line: pure and fast."""
import io

import pytest

from engine import norms
from engine.errors import ConfigError
from orchestrator import sweep
from orchestrator.progress import ProgressBoard

SYNTH = {"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}}


def spec(**flags):
    base = dict(datasets=["seq-synth"], models=["sgd"], methods=["bn"], num_seeds=1, buffer_sizes=[20],
                data_args=SYNTH)
    base.update(flags)
    return sweep.spec_from_flags(base)


def needs(*layers):
    missing = [name for name in layers if name not in norms.REGISTRY]
    return pytest.mark.skipif(bool(missing), reason=f"layers not registered yet: {missing}")


def test_grid_is_the_product_of_its_axes_seed_outermost():
    trials = sweep.expand(spec(num_seeds=3, models=["sgd", "er"], buffer_sizes=[20, 40]))
    assert len(trials) == 3 * 2 * 2
    assert [t.config.seed for t in trials] == [0] * 4 + [1] * 4 + [2] * 4   # run.py's order
    assert len({t.trial_id for t in trials}) == len(trials)
    assert len({t.run_name for t in trials}) == len(trials)


def test_trial_id_is_the_engines_hash_and_ignores_where_data_lives():
    a = sweep.expand(spec(data_root="/somewhere"))[0]
    b = sweep.expand(spec(data_root="/elsewhere"))[0]
    assert a.trial_id == b.trial_id == a.config.trial_id()
    assert a.config.data_root == "/somewhere"
    assert a.config.data_args["image_size"] == 8       # resolved: every option filled in
    assert sweep.expand(spec())[0].trial_id == a.trial_id  # stable across calls


def test_same_layer_spelled_twice_is_one_trial():
    assert len(sweep.expand(spec(methods=["bn", "BN"]))) == 1


def test_run_name_follows_run_py():
    t = sweep.expand(spec(models=["er"], seeds=[2]))[0]
    assert t.run_name == "seq-synth_ep1_er_buf20_bn_seed2_reservoir"
    assert t.wandb_name == "er20_bn"                                    # run.py's --wandb_name
    off = sweep.expand(spec(setting="offline", epochs=2))[0]
    assert off.run_name == "seq-synth_ep2_sgd_buf20_bn_seed0_reservoir_offline"


def test_default_buffer_sizes_per_dataset():
    s = spec(buffer_sizes=None, datasets=["seq-digits"], data_args={})
    assert sweep.buffer_sizes_for(s, "seq-digits") == (100, 200)
    assert sweep.DEFAULT_BUFFER_SIZES["seq-cifar10"] == (500, 2000)       # run.py's get_buffers
    assert sweep.DEFAULT_BUFFER_SIZES["seq-cifar100"] == sweep.DEFAULT_BUFFER_SIZES["seq-miniimg"] == (2000, 5000)
    from engine.datasets import REGISTRY as DATASETS
    assert set(sweep.DEFAULT_BUFFER_SIZES) == set(DATASETS.names())   # every dataset runs without --buffer_sizes


def test_seeds():
    assert spec(num_seeds=2).seeds == (0, 1)
    assert spec(seeds=[3, 5, 3]).seeds == (3, 5)
    with pytest.raises(ConfigError, match="num_seeds 0 must be at least 1"):
        spec(num_seeds=0)
    with pytest.raises(ConfigError, match="seeds"):
        spec(seeds=[-1])


@pytest.mark.parametrize("flags, message", [
    (dict(datasets=["seq-nope"]), "--datasets: unknown dataset 'seq-nope'"),
    (dict(models=["nope"]), "--models: unknown method 'nope'; choose one of: der,"),
    (dict(methods=["nope"]), "--methods: unknown norm 'nope'"),
    (dict(norm_grid=["bn:kappa=1"]), "norm bn takes no option 'kappa'"),
    (dict(norm_grid=["bn"]), "layer:option"),
    (dict(data_args={"seq-synth": {"nope": 1}}), "takes no option 'nope'"),
    (dict(buffer_mode="fifo"), "--buffer_mode 'fifo'"),
    (dict(setting="batch"), "--setting 'batch'"),
    (dict(trial_args=["seed=3"]), "set by its own flag"),
    (dict(trial_args=["deterministic=true"]), r"set by its own flag \(--deterministic\)"),
    (dict(deterministic="yes please"), "--deterministic 'yes please': expected true or false"),
    (dict(precision="fp16"), "--precision 'fp16'; choose one of: fp32, bf16"),
    (dict(trial_args=["precision=bf16"]), r"set by its own flag \(--precision\)"),
    (dict(trial_args=["nope=3"]), "unknown trial field 'nope'"),
    (dict(trial_args=["lr=-1"]), "lr=-1 must be a positive"),
])
def test_bad_input_is_one_line_config_error(flags, message):
    with pytest.raises(ConfigError, match=message) as info:
        sweep.expand(spec(**flags))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("flag, value", [("deterministic", True), ("precision", "bf16")])
def test_numerics_flags_reach_every_trial_and_give_new_ids(flag, value):
    plain, other = sweep.expand(spec(num_seeds=2)), sweep.expand(spec(num_seeds=2, **{flag: value}))
    assert [getattr(t.config, flag) for t in other] == [value, value]
    assert all(getattr(t.config, flag) != value for t in plain)
    assert not {t.trial_id for t in plain} & {t.trial_id for t in other}   # never mixed in one table


def test_trial_args_sweep_and_name_the_varying_field():
    trials = sweep.expand(spec(trial_args=["lr=0.05|0.1", "n_tasks=5"]))
    assert [t.config.lr for t in trials] == [0.05, 0.1]
    assert trials[0].run_name.endswith("_lr0.05") and trials[1].run_name.endswith("_lr0.1")


def test_data_args_for_all_datasets_and_per_dataset():
    parsed = sweep.parse_data_args(["noise=20", "seq-synth:image_size=8"])
    assert parsed == {"*": {"noise": "20"}, "seq-synth": {"image_size": "8"}}
    s = spec(data_args=["train_per_class=8,test_per_class=4", "seq-synth:image_size=8"])
    assert sweep.expand(s)[0].config.data_args["image_size"] == 8


def test_norm_grid_parsing_forms():
    assert sweep.parse_norm_grid(["bn:"]) == {"bn": {}}
    assert sweep.parse_norm_grid({"bn": None}) == {"bn": {}}


@needs("adab2n")
def test_adab2n_default_grid_is_run_pys_and_can_be_pinned_or_expanded():
    default = sweep.expand(spec(methods=["bn", "AdaB2N"]))
    ada = [t for t in default if t.config.norm == "adab2n"]
    assert len(ada) == 4 * 4 * 2
    assert {t.config.norm_args["kappa"] for t in ada} == {0.1, 0.4, 0.7, 1.0}
    assert {t.config.norm_args["lambd"] for t in ada} == {0.01, 0.1, 1.0, 10.0}
    assert "seq-synth_ep1_sgd_buf20_adab2n_kappa0.4_lambd10.0_ada1_seed0_reservoir" in {t.run_name for t in ada}
    assert "sgd20_adab2n_kappa0.4_lambd10.0_ada1" in {t.wandb_name for t in ada}

    pinned = sweep.expand(spec(methods=["adab2n"], norm_grid=["adab2n:kappa=0.4,lambd=0.1,ada_t0=1"]))
    assert len(pinned) == 1 and pinned[0].config.norm_args["kappa"] == 0.4
    two = sweep.expand(spec(methods=["adab2n"], norm_grid=["adab2n:kappa=0.1|0.4"]))
    assert [t.config.norm_args["kappa"] for t in two] == [0.1, 0.4]
    assert len(sweep.expand(spec(methods=["adab2n"], norm_grid={"adab2n": {"kappa": [0.4, "0.40"]}}))) == 1
    with pytest.raises(ConfigError, match="above its maximum"):
        sweep.expand(spec(methods=["adab2n"], norm_grid=["adab2n:kappa=7"]))


@needs("adab2n")
def test_miniimagenet_uses_run_pys_small_lambdas():
    s = spec(methods=["adab2n"])
    grid = sweep.norm_grid_of(s, "adab2n", "seq-miniimg")
    assert grid["lambd"] == (0.00001, 0.0001, 0.001, 0.01)
    assert sweep.norm_grid_of(s, "adab2n", "seq-cifar10")["lambd"] == (0.01, 0.1, 1.0, 10.0)


def test_colliding_run_names_get_the_trial_id():
    t = sweep.expand(spec())[0]
    named = sweep._unique_names([t, sweep.PlannedTrial("other", t.run_name, t.config, t.wandb_name)])
    assert named[0].run_name == f"{t.run_name}_{t.trial_id}" and named[1].run_name == f"{t.run_name}_other"


def test_presets_parse_and_unknown_keys_are_rejected(tmp_path):
    for name in ("quickstart", "adab2n_online"):
        flags = sweep.load_preset(name)
        sweep.spec_from_flags({k: v for k, v in flags.items() if k in sweep.DEFAULTS})
    assert sweep.load_preset("adab2n_online")["models"] == ["derpp", "er_ace"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: [seq-synth]\nseedz: 3\n")
    with pytest.raises(ConfigError, match="unknown key 'seedz'"):
        sweep.load_preset(str(bad))
    with pytest.raises(ConfigError, match="no such preset"):
        sweep.load_preset("nope")
    odd = tmp_path / "odd.yaml"
    odd.write_text("yes: true\nseedz: 3\n")   # YAML 1.1: the key `yes` is the boolean True
    with pytest.raises(ConfigError, match="key True is not a flag name .YAML read it as bool"):
        sweep.load_preset(str(odd))


@needs("tbbn", "adab2n")
def test_quickstart_preset_is_twelve_trials():
    flags = sweep.load_preset("quickstart")
    trials = sweep.expand(sweep.spec_from_flags({k: v for k, v in flags.items() if k in sweep.DEFAULTS}))
    assert len(trials) == 12 and {t.config.norm for t in trials} == {"bn", "tbbn", "adab2n"}


def test_summary_counts_axes():
    s = spec(num_seeds=2, models=["sgd", "er"])
    lines = sweep.summarize_grid(s, sweep.expand(s))
    assert lines[-1].strip() == "= 4 trials" and "seeds        2" in lines[0]


# ---- GPUs (NVML readings are data; the choice is ours) -------------------------------------------


# ---- progress line ----------------------------------------------------------------------------

def test_progress_sums_kept_per_event_equal_a_recount_over_every_trial():
    """The board keeps its counts and ETA sums per event (O(1): 5000-trial sweeps); after any
    mix of starts, resumed and in-task reports, retries and ends they equal a full recount."""
    import random

    rng = random.Random(0)
    board = ProgressBoard({f"t{i}": rng.choice([2, 5, 10]) for i in range(60)}, already_done=7,
                          stream=io.StringIO(), every_s=1e9)
    for _ in range(400):
        tid = f"t{rng.randrange(60)}"
        t = board.trials[tid]
        if t.state in ("done", "failed"):
            continue
        event = rng.choice(["start", "task", "epoch", "ok", "fail"])
        if event == "start":
            board.started_trial(tid)
        elif event == "task":
            board.reported(tid, {"tasks_done": rng.randint(1, t.n_tasks)})
        elif event == "epoch":
            board.reported(tid, {"tasks_done": rng.randrange(t.n_tasks), "epoch": 1, "epochs": 3})
        else:
            board.ended(tid, ok=event == "ok")
        trials = board.trials.values()
        recount = {"done": 7, "running": 0, "failed": 0, "pending": 0}
        for x in trials:
            recount[x.state] += 1
        assert board.counts() == recount
        here = sum(x.units - x.base for x in trials if x.base is not None)
        left = sum(x.n_tasks - x.units for x in trials if x.state in ("running", "pending"))
        assert board._units_here == pytest.approx(here) and board._units_left == pytest.approx(left)


def test_progress_counts_and_eta_use_work_done_in_this_run():
    out = io.StringIO()
    board = ProgressBoard({"a": 4, "b": 4}, already_done=3, stream=out, every_s=0)
    board.started_trial("a")
    board.reported("a", {"tasks_done": 3})    # resumed: tasks 1-2 were done before this run
    board.started = board.started - 10         # 10 s for one task -> 1 + 4 tasks left ~ 50 s
    assert board.counts() == {"done": 3, "running": 1, "failed": 0, "pending": 1}
    assert 45 <= board.eta_s() <= 55
    board.reported("b", {"tasks_done": 0, "task": 1, "epoch": 1, "epochs": 4})   # offline: inside task 1
    assert board.trials["b"].units == 0.25 and board.trials["b"].base == 0
    board.ended("a", ok=True)
    board.ended("b", ok=False, line="FAILED b")
    board.close()
    assert board.counts() == {"done": 4, "running": 0, "failed": 1, "pending": 0}
    assert "FAILED b" in out.getvalue() and "trials 5: done 4" in out.getvalue()
