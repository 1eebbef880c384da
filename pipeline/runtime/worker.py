"""A shard worker: the three stages in one process, so decoded pixels never leave it.

    ShardTask -> ShardDecoder -> DecodedShard -> ShardEncoder -> EncodedShard -> ShardCommitter -> ShardResult

No Ray here: the executor (ray_exec.py) runs one ShardWorker per actor; tests and benchmarks build
one in-process from the same WorkerSpec and get the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..preprocess.factory import Preprocessor
from ..sinks import SinkSpec
from ..sources import Source
from .decode_stage import ShardDecoder
from .encode_stage import ShardEncoder, load_checked_codec
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
    sink_name: str
    sink_spec: SinkSpec
    settings_hash: str
    batch_size: int
    batch_pixels: int
    latent_format: str
    flip_pair: bool = False
    sample_timeout_s: float = 60.0
    threads: int = 1  # torch threads per worker (CPU encoding)
    device: str = "cpu"


class ShardWorker:
    """Holds the codec for its lifetime; process() runs a whole shard to its commit."""

    def __init__(self, spec: WorkerSpec):
        import torch

        if spec.device == "cpu":
            torch.set_num_threads(max(1, spec.threads))
        self.spec = spec
        self.decoder = ShardDecoder(spec.source, spec.preprocessor, spec.cache_salt, spec.sample_timeout_s)
        self.encoder = ShardEncoder(
            load_checked_codec(spec.codec_ref, spec.codec_hash, spec.device),
            spec.preprocessor,
            batch_size=spec.batch_size,
            batch_pixels=spec.batch_pixels,
            latent_format=spec.latent_format,
            device=spec.device,
            flip_pair=spec.flip_pair,
            cpu_decoder=self.decoder,
        )
        self.committer = ShardCommitter(spec.sink_name, spec.sink_spec, spec.settings_hash)

    def process(self, task: ShardTask) -> ShardResult:
        """Read, decode, encode and commit one shard."""
        return self.encode_and_commit(self.decoder(task))

    def encode_and_commit(self, decoded: DecodedShard) -> ShardResult:
        """The encoder's half, for runs that decode elsewhere (GPU encoders, CPU decode tasks)."""
        return self.committer(self.encoder(decoded))


def decode_only(spec: WorkerSpec, task: ShardTask) -> DecodedShard:
    """The decode stage alone (CPU tasks feeding GPU encoders); no codec is loaded."""
    return ShardDecoder(spec.source, spec.preprocessor, spec.cache_salt, spec.sample_timeout_s)(task)
