"""Output formats: one entry per format pairs the sink that writes it, the loaders that read it and
the size model the dry run estimates with, plus what the format accepts.

Why: the facts of a format were spread as `if fmt == "zarr"` branches (config validation, the dry
run's size estimate, the follow-mode reader, benchmarks). Each sink module now declares its entry
next to its writer (`Sink.output_format`), the sink registry (`pipeline.registry.SINKS`) is the one
list of formats, and everything else asks the entry:

    fmt = output_format("zarr")
    fmt.stream_loader()           # LatentZarrStream (fmt.dataset_loader(): LatentZarrDataset, or None)
    fmt.size.bytes_per_sample(latent_bytes, labelled=True, flip_pair=False)  # + fmt.size.shard_overhead()
    fmt.coded_latents             # False: stores int8 only (--latent-format npy)
    fmt.live_description          # "latents.zarr": a store describing a run before its manifest exists

tests/sinks/test_sink_contract.py runs over every registered sink and fails for one without an entry.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Protocol


class SizeModel(Protocol):
    """What a format adds to the latents it stores (a model; the contract test measures it)."""

    def bytes_per_sample(
        self, latent_bytes: float, labelled: bool, flip_pair: bool = False, meta_bytes: float | None = None
    ) -> float:
        """Bytes written per sample: latent (x2 with --flip-pair) plus the container's own; meta_bytes:
        the JSON metadata's size when known (else a typical size, ~700 bytes)."""
        ...

    def shard_overhead(self) -> int:
        """Bytes a shard adds beyond its samples (e.g. tar padding)."""
        ...


@dataclass(frozen=True)
class OutputFormat:
    """One output format, declared by its sink module (`Sink.output_format`)."""

    stream: str  # "module:Class" of the streaming loader (imported on use: sinks stay torch-free)
    size: SizeModel
    coded_latents: bool  # stores entropy-coded latents (--latent-format zstd/png/webp), not only npy
    # every sample has one latent shape (one per bucket with --buckets): variable-size images refused
    fixed_shape: bool = False
    dataset: str | None = None  # "module:Class" of a map-style (random access) loader, if any
    # a store under the output root whose attributes describe the codec and latents while the run is
    # still being written (before manifest.json exists); None: only the manifest does
    live_description: str | None = None

    def stream_loader(self) -> type:
        return _resolve(self.stream)

    def dataset_loader(self) -> type | None:
        return _resolve(self.dataset) if self.dataset else None

    def check_latent_format(self, name: str, latent_format: str) -> None:
        if latent_format != "npy" and not self.coded_latents:
            raise ValueError(
                f"--format {name} stores int8 latents (its own compression applies): "
                f"use --latent-format npy, not {latent_format}"
            )


def output_format(name: str) -> OutputFormat:
    """The entry of a registered format (sink) name; ValueError naming the choices otherwise."""
    from . import sinks  # noqa: F401  (registers the sinks)
    from .registry import SINKS, lookup

    entry = getattr(lookup(SINKS, name, "format"), "output_format", None)
    if entry is None:
        raise ValueError(f"sink {name!r} declares no output_format (pipeline/formats.py)")
    return entry


def formats() -> dict[str, OutputFormat]:
    """Every registered format and its entry."""
    from . import sinks  # noqa: F401
    from .registry import SINKS

    return {name: output_format(name) for name in sorted(SINKS)}


def _resolve(path: str) -> Any:
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)
