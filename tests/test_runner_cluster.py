"""--address: joining an existing two-node Ray cluster (ray.cluster_utils, both nodes on this
machine, 1 CPU each) spreads trials over both nodes, through the launcher's real join path
(code shipped as the job's working_dir, shared-storage probe). Slow: ~40 s on 2 cores."""
import pytest

from orchestrator import sweep
from orchestrator.cluster import ClusterOptions, check_shared_storage, fit_trial_resources, session
from orchestrator.ledger import SweepDir
from orchestrator.runner import RunOptions, run_sweep

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def test_trials_run_on_both_nodes_of_a_joined_cluster(two_nodes, tmp_path):
    trials = sweep.expand(sweep.spec_from_flags(dict(
        datasets=["seq-synth"], models=["sgd"], methods=["bn"], num_seeds=4, buffer_sizes=[20],
        data_args={"seq-synth": {"train_per_class": 8, "test_per_class": 4, "image_size": 8}})))
    sd = SweepDir(tmp_path, "two")
    sd.check_writable()
    with session(ClusterOptions(address=two_nodes.address), say=print) as info:
        assert info.nodes == 2 and info.max_node_cpus == 1
        gpus_per_trial, note = fit_trial_resources(info, 1, None)
        assert gpus_per_trial == 0 and note is None
        check_shared_storage(sd.root)
        out = run_sweep(trials, sd, RunOptions(cpus_per_trial=1, gpus_per_trial=gpus_per_trial))
    assert sorted(out.finished) == sorted(t.trial_id for t in trials) and not out.failed
    nodes = {out.last_results[t.trial_id]["node_id"] for t in trials}
    assert len(nodes) == 2, "every trial ran on the same node"
