"""The executor's GPU branch (CPU decode tasks feeding encoders that keep two shards in flight),
run on a Ray that declares a GPU resource: the same shards, byte for byte, as the CPU branch.

The encoders run on the CPU device here (no GPU on CI); what is checked is the scheduling path of
`--num-gpus-per-worker`: decode tasks, object refs into the actors, results collected."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from e2e_helpers import REPO, SHARD_SIZE, SIZE

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import json, sys
    import ray
    from pipeline.config import EncodeConfig, ImageSettings
    from pipeline.sinks import SinkSpec
    from pipeline.runtime import ray_exec
    from pipeline.runtime.driver import prepare_output, worker_spec
    from pipeline.runtime.worker import ShardWorker

    corpus, codec, out_gpu, out_cpu, SIZE, SHARD_SIZE = sys.argv[1:5] + [int(a) for a in sys.argv[5:7]]
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, logging_level="ERROR")
    results = {}
    for output, gpus in ((out_gpu, 1.0), (out_cpu, 0.0)):
        cfg = EncodeConfig(
            input=corpus,
            sink=SinkSpec(output=output, shard_size=SHARD_SIZE),
            codec=codec,
            image=ImageSettings(size=SIZE),
            progress=False,
        )
        prepared = prepare_output(cfg)
        spec = worker_spec(cfg, prepared.prep)
        if gpus:
            pool = ray_exec.WorkerPool(ray_exec.ExecutorPlan(1, 1, gpus_per_worker=gpus), codec, "cpu", 1)
            done = pool.run(spec, prepared.plan.todo)
            pool.close()
        else:
            worker = ShardWorker(spec)
            done = [worker.process(t) for t in prepared.plan.todo]
        results[output] = sorted((r.shard, r.written, r.bytes, r.failed) for r in done)
    print(json.dumps(results))
    """
)


def test_gpu_branch_of_the_executor_writes_the_cpu_branchs_shards(corpus, klt_codec, tmp_path):
    gpu, cpu = tmp_path / "gpu", tmp_path / "cpu"
    run = subprocess.run(
        [
            sys.executable,
            "-c",
            SCRIPT,
            str(corpus),
            str(klt_codec),
            str(gpu),
            str(cpu),
            str(SIZE),
            str(SHARD_SIZE),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(run.stdout.strip().splitlines()[-1])
    assert results[str(gpu)] == results[str(cpu)] and all(r[3] is None for r in results[str(gpu)])
    for tar in sorted(cpu.glob("*.tar")):
        assert (gpu / tar.name).read_bytes() == tar.read_bytes(), tar.name
    assert len(list(gpu.glob("_shards/*.json"))) == len(results[str(gpu)])
