"""What both loaders share: reading a run's manifest, the codec it names, and latent decoding."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from ..codec import CheckpointError, WaLLoC, entropy
from ..codec import load as load_codec
from ..codec.bottleneck import Compander
from ..formats import output_format
from ..manifest import MANIFEST, OutputRoot
from ..schemas import SchemaError, validate

LatentOutput = Literal["float", "int"]


class CodecMismatchError(ValueError):
    """The codec offered for decoding is not the one that wrote the latents."""


@dataclass(frozen=True)
class RunInfo:
    """A pipeline output as a reader sees it: the validated manifest, or (following a run still being
    written, `provisional=True`) a description built from `_run.json` and the committed markers."""

    root: str
    manifest: dict[str, Any]
    storage_options: dict | None = None
    provisional: bool = False

    @classmethod
    def open(cls, root: str, storage_options: dict | None = None) -> RunInfo:
        out = OutputRoot(root, storage_options)
        return cls(root=root.rstrip("/"), manifest=out.read_manifest(), storage_options=storage_options)

    @classmethod
    def follow(
        cls,
        root: str,
        storage_options: dict | None = None,
        codec: str | None = None,
        timeout: float | None = None,
    ) -> RunInfo:
        """A run that may still be written: its manifest once complete, else what `_run.json`, the
        Zarr store's attributes or the codec given (hash-checked against the run's) tell."""
        from .follow import run_complete, wait_for_run, wait_for_store

        out = OutputRoot(root, storage_options)
        state = wait_for_run(out, timeout=timeout)
        if run_complete(out, state):
            return cls.open(root, storage_options)
        settings = state["settings"]
        description: dict[str, Any] | None = None
        store = output_format(settings["sink"]).live_description
        if store is not None:
            description = wait_for_store(f"{out.url}/{store}", storage_options)
        if description is None or "codec" not in description:
            if codec is None:
                raise CodecMismatchError(
                    f"{root} is still being written and has no manifest yet: pass codec= (the codec's "
                    "name or path) so the reader knows its latent bits"
                )
            model = load_codec(codec)
            check_codec(model, settings["codec_hash"])
            description = {
                "codec": {"name": model.name, "hash": model.hash, "config": model.config.to_dict()},
                "latent": {"dtype": "int8", "bits": model.config.latent_bits, "shape": None},
            }
        previous = out.read_json(MANIFEST) if out.exists(MANIFEST) else {}  # an append run's base
        manifest = {
            "run": {"sink": settings["sink"], "shard_size": settings["shard_size"]},
            "codec": description["codec"],
            "latent": description["latent"],
            "preprocessing": settings["preprocessing"],
            "label_map": state.get("label_map", {}),
            "shards": [],
            "superseded": previous.get("superseded", []),
        }
        return cls(root.rstrip("/"), manifest, storage_options, provisional=True)

    @property
    def codec_hash(self) -> str:
        return self.manifest["codec"]["hash"]

    @property
    def encoder_hash(self) -> str | None:
        """The writer's encoder hash (codec.encoder_hash); None in manifests written before it."""
        return self.manifest["codec"].get("encoder_hash")

    @property
    def bits(self) -> int:
        return int(self.manifest["latent"]["bits"])

    @property
    def levels(self) -> int:
        """J: wavelet levels (a latent step covers 2^J input samples)."""
        return int(self.manifest["codec"]["config"]["J"])

    @property
    def is_audio(self) -> bool:
        return self.manifest["codec"]["config"]["kind"] == "1d"

    @property
    def stems(self) -> list[str] | None:
        """Grouped stems (MUSDB runs): the signals every sample holds, in the order of its latent's
        first axis (mixture first); None when each sample is one signal."""
        stems = self.manifest["preprocessing"].get("stems")
        return list(stems) if stems else None

    @property
    def label_map(self) -> dict[str, int]:
        return dict(self.manifest["label_map"])

    @property
    def superseded(self) -> set[tuple[int, str]]:
        """(shard, key) entries replaced by a re-encode (C4): never yielded."""
        return {(int(e["shard"]), e["key"]) for e in self.manifest.get("superseded", [])}

    @property
    def flip_pair(self) -> bool:
        return bool(self.manifest["run"].get("flip_pair", False))

    def shard_urls(self) -> list[str]:
        return [f.url for f in self.shard_files()]

    def shard_files(self, entries: list[dict[str, Any]] | None = None) -> list[ShardFile]:
        """One record per WebDataset tar (a bucketed shard has one tar per bucket: its `parts`)."""
        out = []
        for s in self.manifest["shards"] if entries is None else entries:
            for part in s.get("parts") or [s]:
                if part["name"].endswith(".tar"):
                    out.append(
                        ShardFile(
                            url=f"{self.root}/{part['name']}",
                            sha256=part["sha256"],
                            bucket=part.get("bucket"),
                            samples=int(part["samples"]),
                            shard=int(s["shard"]),
                        )
                    )
        return out

    def codec(self, name_or_path: str | None = None) -> WaLLoC:
        """The codec that wrote these latents (by the manifest's name, or the one given), hash-checked."""
        ref = name_or_path or self.manifest["codec"].get("name")
        if not ref:
            raise CodecMismatchError("the manifest names no codec; pass the codec's path")
        codec = load_codec(ref)
        encoder = self.encoder_hash
        if encoder is None and not codec.decodes(self.codec_hash) and self.manifest["codec"].get("name"):
            # an older manifest: the codec it names, if it is still the one that wrote the run, says
            # which encoder that was
            try:
                writer = load_codec(self.manifest["codec"]["name"])
            except CheckpointError:  # not here any more: only the full hash can be checked
                writer = None
            encoder = writer.encoder_hash if writer is not None and writer.hash == self.codec_hash else None
        check_codec(codec, self.codec_hash, encoder)
        return codec


@dataclass(frozen=True)
class ShardFile:
    """One WebDataset tar of a run (C1): a whole shard, or one bucket's part of it."""

    url: str
    sha256: str
    bucket: str | None
    samples: int
    shard: int


class MixedRunsError(ValueError):
    """Runs given to one loader were made with different codecs or preprocessing."""


def check_compatible(infos: list[RunInfo], allow_mixed: bool = False) -> None:
    """Refuse to read runs made with different codecs or preprocessing together, naming what differs."""
    first = infos[0]
    for other in infos[1:]:
        diffs = []
        if not _same_latents(first, other):
            diffs.append(f"codec hash ({first.codec_hash[:12]} vs {other.codec_hash[:12]})")
        pa, pb = first.manifest["preprocessing"], other.manifest["preprocessing"]
        keys = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
        if keys:
            diffs.append("preprocessing keys " + ", ".join(keys))
        if other.bits != first.bits:
            diffs.append(f"latent bits ({first.bits} vs {other.bits})")
        if diffs and not allow_mixed:
            raise MixedRunsError(
                f"{first.root} and {other.root} differ in {'; '.join(diffs)}: their latents are not "
                "interchangeable (pass allow_mixed=True to read them together anyway)"
            )


def channel_stats(infos: list[RunInfo], output: LatentOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, std) of what the loader outputs (C3): raw integers ("int") or dequantized
    values ("float"). One run: the manifest's figures; several: recomputed from the summed histograms."""
    stats = [i.manifest.get("statistics") for i in infos]
    missing = [i.root for i, s in zip(infos, stats, strict=True) if not s]
    if missing:
        raise ValueError(f"normalize=True needs the manifest's statistics, which {missing[0]} lacks")
    if len(stats) == 1:
        s = stats[0]
        prefix = "" if output == "int" else "dequantized_"
        mean, std = s[f"{prefix}mean"], s[f"{prefix}std"]
        return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    bits = infos[0].bits
    hist = sum(np.asarray(s["histogram"], dtype=np.float64) for s in stats)
    values = np.arange(hist.shape[1], dtype=np.float64) + stats[0]["histogram_offset"]
    if output == "float":
        values = Compander(bits).to_normal(torch.from_numpy(values).float()).double().numpy()
    count = hist.sum(axis=1)
    mean = (hist * values).sum(axis=1) / count
    var = (hist * (values[None] - mean[:, None]) ** 2).sum(axis=1) / count
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(np.sqrt(var), dtype=torch.float32)


def flip_choice(seed: int, epoch: int, key: str) -> bool:
    """flip="pair" (C2): whether this sample's mirrored latent is used this epoch, from (seed, epoch, key)."""
    return hashlib.blake2b(f"{seed}:{epoch}:{key}".encode(), digest_size=1).digest()[0] & 1 == 1


def valid_mask(valid_length: int | None, steps: int, J: int, input_length: int | None = None) -> torch.Tensor:
    """Audio (C6): which latent steps hold real signal (all when valid_length is unknown).

    Frame f of the wavelet packet transform covers input samples [f * 2^J, (f + 1) * 2^J) of the
    (centered-padded) window; a frame is valid iff it starts before valid_length. Encoders that pad
    frames on both sides (the reference's 1-D 1x1 encoder adds one zero frame per side: 2^17 samples,
    J=8 -> 258 steps) shift frame f to step f + pad; those padding steps carry no signal."""
    if valid_length is None:
        return torch.ones(steps, dtype=torch.bool)
    block = 1 << J
    length = int(input_length) if input_length else steps * block
    padded = length + (-length % block)
    frames, before = padded // block, (padded - length) // 2
    frame = torch.arange(steps) - max(0, (steps - frames) // 2)
    return (frame >= 0) & (frame < frames) & (frame * block - before < int(valid_length))


def _same_latents(a: RunInfo, b: RunInfo) -> bool:
    """Runs whose latents come from the same encoder (the same codec, or the same encoder hash)."""
    if a.codec_hash == b.codec_hash:
        return True
    return a.encoder_hash is not None and a.encoder_hash == b.encoder_hash


def check_codec(codec: WaLLoC, expected_hash: str, expected_encoder_hash: str | None = None) -> None:
    """Refuse a codec that cannot decode latents written by the codec `expected_hash`: one with
    another encoder. A codec with the writer's encoder hash (another decoder) is accepted."""
    if not codec.decodes(expected_hash, expected_encoder_hash):
        encoder = f" (encoder {expected_encoder_hash[:12]})" if expected_encoder_hash else ""
        raise CodecMismatchError(
            f"latents were written by codec {expected_hash[:12]}{encoder}, the codec given is "
            f"{codec.hash[:12]} (encoder {codec.encoder_hash[:12]}; {codec.name or codec.source}); "
            "decoding them with it would give wrong pixels"
        )


class Dequantizer:
    """int8 latents -> what the model sees: raw integers as float, or the bottleneck's dequantized values."""

    def __init__(self, bits: int, output: LatentOutput = "float"):
        if output not in ("float", "int"):
            raise ValueError("output must be 'float' (dequantized) or 'int' (raw integers)")
        self.compander = Compander(bits)
        self.output = output
        # to_normal is elementwise and int8 latents take 2^bits values: a lookup table gives the same
        # floats as computing it per element, without an erfinv per value (the loaders' hot spot)
        # (numpy indexing: torch's threaded kernels stall when the CPUs are oversubscribed)
        self.offset = 1 << (bits - 1)
        self.table = self.compander.to_normal(torch.arange(-self.offset, self.offset).float()).numpy()

    def __call__(self, z: np.ndarray | torch.Tensor) -> torch.Tensor:
        if self.output == "int":
            return torch.as_tensor(np.asarray(z)).to(torch.int8)
        a = z.numpy() if isinstance(z, torch.Tensor) else np.asarray(z)
        if a.dtype == np.int8 and a.size:
            index = a.astype(np.int64) + self.offset
            if index.min() >= 0 and index.max() < len(self.table):
                return torch.from_numpy(self.table[index])
        return self.compander.to_normal(torch.as_tensor(a).float())


def sample_meta(text: str | bytes, where: str) -> dict[str, Any]:
    """A sample's metadata (WebDataset `<key>.json`, Zarr `meta[i]`), checked against sample.schema.json."""
    try:
        meta = json.loads(text)
    except ValueError as err:
        raise SchemaError(f"{where}: metadata is not JSON ({err})") from None
    validate(meta, "sample.schema.json", f"{where} metadata")
    return meta


def latent_from_sample(
    sample: dict[str, Any],
    expected_hash: str | None = None,
    field: str = "latent",
    stems: list[str] | None = None,
) -> np.ndarray:
    """The int8 latent of a WebDataset sample (field "latent", or "latent_flip" of a flip pair),
    whatever format the pipeline wrote it in. Grouped stems (`stems`, RunInfo.stems): the entries
    `<stem>.latent.*` stacked in that order, (S, *latent)."""
    if stems and f"{field}.npy" not in sample and f"{field}.wlat" not in sample:
        return np.stack([latent_from_sample(sample, expected_hash, f"{s}.{field}") for s in stems])
    if f"{field}.npy" in sample:
        return np.load(io.BytesIO(sample[f"{field}.npy"]), allow_pickle=False)
    if f"{field}.wlat" in sample:
        z, header = entropy.decode_latents(sample[f"{field}.wlat"])
        if expected_hash is not None and header.codec_hash != expected_hash:
            raise CodecMismatchError(f"sample {sample.get('__key__')} was coded by another codec")
        return z.numpy()
    raise KeyError(f"sample {sample.get('__key__')} has no {field} field ({sorted(sample)})")


def has_field(sample: dict[str, Any], field: str) -> bool:
    return f"{field}.npy" in sample or f"{field}.wlat" in sample
