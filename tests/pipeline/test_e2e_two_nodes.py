"""The job on a real two-node Ray cluster: shards spread over both nodes, output byte-identical.

`ray start --head --num-cpus 1` and `ray start --address ... --num-cpus 1` (tests/pipeline/
ray_cluster.py, token authentication as Ray 2.60 requires), then the job's own command line with
`--address`: one shard worker lands on each node (the executor spreads them), both commit shards,
and every file of the output equals the one-node reference run's.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from e2e_helpers import REPO, assert_same_tree, standard_args
from ray_cluster import local_cluster

pytestmark = pytest.mark.slow


def test_two_nodes_share_the_shards_and_write_the_one_node_bytes(reference_run, corpus, klt_codec, tmp_path):
    output = tmp_path / "out"
    with local_cluster(nodes=2, cpus_per_node=1, log_dir=tmp_path) as (address, env):
        job = [sys.executable, "jobs/encode_imagenet.py", *standard_args(corpus, output, klt_codec)]
        run = subprocess.run(
            [*job, "--address", address, "--no-progress"],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "inputs           25  (written 24 + errors 1)" in run.stdout
    nodes = [line for line in run.stdout.splitlines() if line.startswith("nodes")]
    assert nodes and nodes[0].split()[1] == "2", run.stdout  # both nodes committed shards
    assert_same_tree(reference_run, output)
