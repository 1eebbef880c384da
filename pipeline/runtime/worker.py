"""A shard worker: the three stages in one process, so decoded pixels never leave it.

    ShardTask -> ShardDecoder -> DecodedShard -> ShardEncoder -> EncodedShard -> ShardCommitter -> ShardResult

No Ray here: the executor (ray_exec.py) runs one ShardWorker per actor; tests and benchmarks build
one in-process from the same WorkerSpec and get the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..preprocess.factory import Preprocessor
from ..sinks import SinkSpec
from ..sources import Source
from .decode_stage import ShardDecoder
from .encode_stage import ShardEncoder, check_codec, load_codec_on
from .plan import ShardTask
from .work import DecodedShard, ShardResult
from .write_stage import ShardCommitter


@dataclass(frozen=True)
class WorkerSpec:
    """Everything a worker process needs to build its stages (picklable: it travels to Ray actors)."""

    source: Source
    preprocessor: Preprocessor
    codec_ref: str  # bundled name or path: each worker loads the codec once
    codec_hash: str  # ... and checks it is the one the driver planned with
    cache_salt: str
    sink_spec: SinkSpec  # the run's sink: format, latent format, flip pairs, output
    settings_hash: str
    batch_size: int
    batch_pixels: int
    sample_timeout_s: float
    threads: int = 1  # torch threads per worker (CPU encoding)
    device: str = "cpu"

    @property
    def run_key(self) -> tuple[str, str]:
        """Which run this spec is for (a worker keeps its stages while the key stays the same)."""
        return (self.settings_hash, self.sink_spec.output)


class ShardWorker:
    """Holds the codec for its lifetime; process() runs a whole shard to its commit.

    `codec`: one loaded already (a Ray actor loads it while the driver is still listing); it must
    be the one the spec names (same hash)."""

    def __init__(self, spec: WorkerSpec, codec: Any = None):
        set_torch_threads(spec.device, spec.threads)
        if codec is None:
            codec = load_codec_on(spec.codec_ref, spec.device)
        check_codec(codec, spec.codec_hash, spec.codec_ref)
        self.spec = spec
        self.decoder = ShardDecoder(spec.source, spec.preprocessor, spec.cache_salt, spec.sample_timeout_s)
        self.encoder = ShardEncoder(
            codec,
            spec.preprocessor,
            batch_size=spec.batch_size,
            batch_pixels=spec.batch_pixels,
            latent_format=spec.sink_spec.latent_format,
            device=spec.device,
            flip_pair=spec.sink_spec.flip_pair,
            cpu_decoder=self.decoder,
        )
        self.committer = ShardCommitter(spec.sink_spec, spec.settings_hash)

    def process(self, task: ShardTask) -> ShardResult:
        """Read, decode, encode and commit one shard."""
        return self.encode_and_commit(self.decoder(task))

    def encode_and_commit(self, decoded: DecodedShard) -> ShardResult:
        """The encoder's half, for runs that decode elsewhere (GPU encoders, CPU decode tasks)."""
        return self.committer(self.encoder(decoded))


def set_torch_threads(device: str, threads: int) -> None:
    """CPU encoding: the threads this worker's CPUs allow (more would contend with the other workers)."""
    if device == "cpu":
        import torch

        torch.set_num_threads(max(1, threads))


def decode_only(spec: WorkerSpec, task: ShardTask) -> DecodedShard:
    """The decode stage alone (CPU tasks feeding GPU encoders); no codec is loaded."""
    return ShardDecoder(spec.source, spec.preprocessor, spec.cache_salt, spec.sample_timeout_s)(task)
