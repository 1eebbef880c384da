"""What both loaders share: reading a run's manifest, the codec it names, and latent decoding."""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..codec import WaLLoC, entropy
from ..codec import load as load_codec
from ..codec.bottleneck import Compander
from ..manifest import OutputRoot
from ..schemas import SchemaError, validate

LatentOutput = Literal["float", "int"]


class CodecMismatchError(ValueError):
    """The codec offered for decoding is not the one that wrote the latents."""


@dataclass(frozen=True)
class RunInfo:
    """A pipeline output as a reader sees it (validated manifest)."""

    root: str
    manifest: dict[str, Any]

    @classmethod
    def open(cls, root: str, storage_options: dict | None = None) -> RunInfo:
        return cls(root=root.rstrip("/"), manifest=OutputRoot(root, storage_options).read_manifest())

    @property
    def codec_hash(self) -> str:
        return self.manifest["codec"]["hash"]

    @property
    def bits(self) -> int:
        return int(self.manifest["latent"]["bits"])

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.manifest["label_map"])

    def shard_urls(self) -> list[str]:
        return [f"{self.root}/{s['name']}" for s in self.manifest["shards"] if s["name"].endswith(".tar")]

    def codec(self, name_or_path: str | None = None) -> WaLLoC:
        """The codec that wrote these latents (by the manifest's name, or the one given), hash-checked."""
        ref = name_or_path or self.manifest["codec"].get("name")
        if not ref:
            raise CodecMismatchError("the manifest names no codec; pass the codec's path")
        codec = load_codec(ref)
        check_codec(codec, self.codec_hash)
        return codec


def check_codec(codec: WaLLoC, expected_hash: str) -> None:
    if codec.hash != expected_hash:
        raise CodecMismatchError(
            f"latents were written by codec {expected_hash[:12]}, the codec given is {codec.hash[:12]} "
            f"({codec.name or codec.source}); decoding them with it would give wrong pixels"
        )


class Dequantizer:
    """int8 latents -> what the model sees: raw integers as float, or the bottleneck's dequantized values."""

    def __init__(self, bits: int, output: LatentOutput = "float"):
        if output not in ("float", "int"):
            raise ValueError("output must be 'float' (dequantized) or 'int' (raw integers)")
        self.compander = Compander(bits)
        self.output = output

    def __call__(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        z = torch.as_tensor(np.asarray(z)) if not isinstance(z, torch.Tensor) else z
        if self.output == "int":
            return z.to(torch.int8)
        return self.compander.to_normal(z.float())


def sample_meta(text: str | bytes, where: str) -> dict[str, Any]:
    """A sample's metadata (WebDataset `<key>.json`, Zarr `meta[i]`), checked against sample.schema.json."""
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise SchemaError(f"{where}: metadata is not JSON ({err})") from None
    validate(meta, "sample.schema.json", f"{where} metadata")
    return meta


def latent_from_sample(sample: dict[str, Any], expected_hash: str | None = None) -> np.ndarray:
    """The int8 latent of a WebDataset sample, whatever format the pipeline wrote it in."""
    if "latent.npy" in sample:
        return np.load(io.BytesIO(sample["latent.npy"]), allow_pickle=False)
    if "latent.wlat" in sample:
        z, header = entropy.decode_latents(sample["latent.wlat"])
        if expected_hash is not None and header.codec_hash != expected_hash:
            raise CodecMismatchError(f"sample {sample.get('__key__')} was coded by another codec")
        return z.numpy()
    raise KeyError(f"sample {sample.get('__key__')} has no latent field ({sorted(sample)})")
