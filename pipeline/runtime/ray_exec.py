"""The only module that imports Ray: start or join a cluster, run shard workers, collect results.

Plain Ray actors, no Ray Data: each actor builds one ShardWorker (the codec loaded once) and runs
whole shards, reading, decoding, encoding and writing in its own process, so pixels never go through
the object store and no CPU waits for a separate write task. The driver keeps exactly one shard in
flight per actor and hands the next one to whichever actor finishes first: a worker that dies takes
only its own shard, which Ray reruns on the restarted actor (bounded: TASK_RETRIES).

GPU encoders (`--num-gpus-per-worker`, `--decode gpu` on CUDA) keep two shards in flight each, fed by
CPU decode tasks (or read-only tasks with --decode gpu), so the device does not wait for the CPUs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from ..config import ConfigurationError
from .encode_stage import load_codec_on
from .plan import ShardTask
from .work import ShardResult
from .worker import ShardWorker, WorkerSpec, decode_only, set_torch_threads

# A worker process that dies (OOM kill, segfault, node loss) takes its shard with it; Ray runs the
# shard again on the restarted actor, at most TASK_RETRIES more times. A shard that still fails is
# reported like a failed write (summary, exit code 1) and the rest of the run goes on. Actors may
# restart any number of times: every restart is paid for by one of those bounded retries.
TASK_RETRIES = 3
ACTOR_RESTARTS = -1


@dataclass(frozen=True)
class ExecutorPlan:
    """How many shard workers, with which resources each (worker_plan in driver.py decides)."""

    workers: int
    cpus_per_worker: float
    gpus_per_worker: float = 0.0


def init_ray(address: str | None) -> None:
    import logging

    import ray

    if ray.is_initialized():
        return
    if address is None:  # a Ray of our own: its token is made and used here, nothing to tell the user
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        _connect(address, ignore_reinit_error=True, log_to_driver=True)


def _connect(address: str | None, **options) -> None:
    """ray.init; an address where no cluster answers is the user's flag (one line), not a bug."""
    import ray

    try:
        ray.init(address=address, include_dashboard=False, logging_level="WARNING", **options)
    except ConnectionError as err:
        raise ConfigurationError(f"--address {address}: no Ray cluster answers ({err})") from None


def cluster_resources() -> dict[str, float]:
    import ray

    return dict(ray.cluster_resources())


def resources_of_cluster(address: str) -> dict[str, float]:
    """The dry run: a running cluster's resources, without staying connected."""
    import ray

    _connect(address, log_to_driver=False)
    try:
        return dict(ray.cluster_resources())
    finally:
        ray.shutdown()


def partition_map(ray_up: threading.Event, threads: int = 8, max_tasks: int = 64) -> Callable:
    """A listing.MapFn: Ray tasks once Ray is up (a cluster lists its prefixes, folders and manifest
    files in parallel, on its nodes), threads before that (listing is I/O). Results in argument order.

    At most `max_tasks` tasks, each a run of consecutive partitions: ImageNet's 1,000 class folders
    must not become 1,000 worker processes."""

    def map_fn(fn: Callable, args: list[tuple]) -> list:
        if len(args) < 2:
            return [fn(*a) for a in args]
        if ray_up.is_set():
            import ray

            # no CPU reserved: listing waits on storage, and the shard workers may hold every CPU
            # already (they start while the driver lists): a CPU-holding task would never be scheduled
            task = ray.remote(num_cpus=0, max_retries=TASK_RETRIES)(_call_each)
            step = -(-len(args) // max_tasks)
            runs = [args[i : i + step] for i in range(0, len(args), step)]
            return [r for done in ray.get([task.remote(fn, run) for run in runs]) for r in done]
        with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
            return list(pool.map(lambda a: fn(*a), args))

    return map_fn


def _call_each(fn: Callable, args: list[tuple]) -> list:
    return [fn(*a) for a in args]


class _ShardActor:
    """The actor body. It loads the codec as soon as it starts (while the driver is still listing
    and planning), and builds its ShardWorker from the run's WorkerSpec on the first shard: a
    restarted actor (its process died) gets the spec again with the next shard it is given."""

    def __init__(self, codec_ref: str, device: str, threads: int):
        import ray

        set_torch_threads(device, threads)
        self.codec = load_codec_on(codec_ref, device)
        self.node = ray.get_runtime_context().get_node_id()
        self.worker: ShardWorker | None = None

    def _worker(self, spec: WorkerSpec) -> ShardWorker:
        if self.worker is None or self.worker.spec.run_key != spec.run_key:
            self.worker = ShardWorker(spec, codec=self.codec)
        return self.worker

    def process(self, spec: WorkerSpec, task: ShardTask) -> ShardResult:
        return dataclasses.replace(self._worker(spec).process(task), node=self.node)

    def encode_and_commit(self, spec: WorkerSpec, decoded) -> ShardResult:
        return dataclasses.replace(self._worker(spec).encode_and_commit(decoded), node=self.node)


class WorkerPool:
    """`plan.workers` shard actors, started (and loading the codec) before there is work for them."""

    def __init__(self, plan: ExecutorPlan, codec_ref: str, device: str, threads: int):
        import ray

        self.plan, self.device, self.threads = plan, device, threads
        actor_cls = ray.remote(_ShardActor).options(
            num_cpus=plan.cpus_per_worker,
            num_gpus=plan.gpus_per_worker or None,
            max_restarts=ACTOR_RESTARTS,
            max_task_retries=TASK_RETRIES,
            scheduling_strategy="SPREAD",  # one worker per node first: every node's cores are used
        )
        self.actors = [actor_cls.remote(codec_ref, device, threads) for _ in range(plan.workers)]

    def run(
        self,
        spec: WorkerSpec,
        tasks: list[ShardTask],
        on_result: Callable[[ShardResult], None] | None = None,
    ) -> list[ShardResult]:
        """Every task's ShardResult (committed, or failed with the reason), in completion order."""
        import ray

        on_gpu = self.plan.gpus_per_worker > 0
        spec_ref = ray.put(spec)
        decode = ray.remote(decode_only).options(num_cpus=1, max_retries=TASK_RETRIES) if on_gpu else None
        in_flight_per_actor = 2 if on_gpu else 1
        pending = list(reversed(tasks))  # pop() takes them in shard order
        running: dict[ray.ObjectRef, tuple[int, ShardTask]] = {}

        def submit(actor: int) -> None:
            task = pending.pop()
            if on_gpu:
                ref = self.actors[actor].encode_and_commit.remote(spec_ref, decode.remote(spec_ref, task))
            else:
                ref = self.actors[actor].process.remote(spec_ref, task)
            running[ref] = (actor, task)

        for _ in range(in_flight_per_actor):
            for actor in range(len(self.actors)):
                if pending:
                    submit(actor)
        results = []
        while running:
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, task = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as err:
                result = ShardResult(
                    shard=task.shard,
                    inputs=len(task.items),
                    failed=f"its task failed {TASK_RETRIES + 1} times (its worker died, or raised: "
                    f"{type(err).__name__}; see the Ray logs)",
                )
            results.append(result)
            if on_result is not None:
                on_result(result)
            if pending:
                submit(actor)
        return results

    def close(self) -> None:
        import ray

        for actor in self.actors:
            ray.kill(actor)
