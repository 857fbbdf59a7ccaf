"""Two Ray nodes on one machine: trials run on both, and the rows say which."""
from __future__ import annotations

import pandas as pd
import ray
from ray.cluster_utils import Cluster

from study.cli import main
from tests.study.conftest import TINY_TRAIN

# Long enough (~10 s) that the second trial cannot wait for the first one's process to free up:
# the two run at once, one per node.
SLOWER_TRAIN = TINY_TRAIN.replace("synthetic_size = 600", "synthetic_size = 6000").replace(
    'model = "lenet300_100"', 'model = "lenet5"')


def test_trials_spread_over_two_nodes(write_study, tmp_path):
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        path = write_study("nodes", trials=2, concurrent=2, train=SLOWER_TRAIN)
        assert main(["run", str(path)]) == 0
        trials = pd.read_parquet(tmp_path / "studies" / "nodes" / "results" / "trials")
        assert len(trials) == 2
        node_ids = {n["NodeID"][:8] for n in ray.nodes() if n["Alive"]}
        recorded = {node.rsplit("/", 1)[-1] for node in trials["node"]}
        assert recorded == node_ids, (recorded, node_ids)
    finally:
        ray.shutdown()
        cluster.shutdown()
