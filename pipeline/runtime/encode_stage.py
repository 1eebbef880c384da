"""Stage 2: encode a decoded shard with the codec, in batches of equal-shape samples.

Batching, out-of-memory retries and the refusal of non-finite inputs live in batching.py; this stage
turns their per-sample results into EncodedSamples (entropy-coded when the run asks for it) or error
rows. With --decode gpu it first decodes the shard's bytes on its device in batches, falling back to
the CPU path one input at a time for what the device decoder does not take.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..config import RayConfig
from ..preprocess.factory import Preprocessor, signal_ndim
from ..sinks import EncodedSample
from ..statistics import HistogramAccumulator
from .batching import encode_robust, nonfinite_reason, plan_batches
from .decode_stage import ShardDecoder, sample_meta
from .faults import kill_switch
from .work import DecodedSample, DecodedShard, EncodedShard, ErrorRow


def _error_row(sample: DecodedSample, shard: int, reason: str) -> ErrorRow:
    """The error row of a decoded sample that could not be encoded."""
    return ErrorRow(key=sample.key, source=sample.meta["source"], shard=shard, stage="encode", reason=reason)


def load_codec_on(codec_ref: str, device: str) -> Any:
    """A codec ready to encode on `device` (frozen: inference only)."""
    from ..codec import load as load_codec

    return load_codec(codec_ref).to(device).freeze()


def check_codec(codec: Any, codec_hash: str, codec_ref: str) -> Any:
    """The codec the driver planned with, or an error (a worker must not encode with another codec
    than the one the run records)."""
    if codec.hash != codec_hash:
        raise RuntimeError(
            f"worker loaded codec {codec.hash[:12]} for {codec_ref!r}, driver has {codec_hash[:12]}"
        )
    return codec


def check_device_decoder(preprocessor: Preprocessor, device: str) -> None:
    """The encoder decodes with the backend the driver recorded in the manifest, or not at all."""
    import torch

    from ..preprocess.image_device import available_backend

    spec = preprocessor.spec
    if torch.device(device).type != torch.device(spec.device).type:
        raise RuntimeError(f"--decode gpu: the run decodes on {spec.device}, this encoder runs on {device}")
    backend = available_backend(device)
    if backend != spec.backend:
        raise RuntimeError(
            f"--decode gpu: this worker would decode with {backend}, the run records {spec.backend} "
            "(latents depend on it): install the same torchvision on every node"
        )


class ShardEncoder:
    """DecodedShard -> EncodedShard with one loaded codec (a worker holds one for its lifetime)."""

    def __init__(
        self,
        codec: Any,
        preprocessor: Preprocessor,
        *,
        batch_size: int = RayConfig.batch_size,
        batch_pixels: int = RayConfig.batch_pixels,
        latent_format: str = "npy",
        device: str = "cpu",
        flip_pair: bool = False,
        cpu_decoder: ShardDecoder | None = None,
    ):
        import torch

        self.torch = torch
        self.codec = codec
        self.preprocessor = preprocessor
        self.batch_size = batch_size
        self.batch_pixels = batch_pixels
        self.latent_format = latent_format
        self.device = device
        self.flip_pair = flip_pair
        # --decode gpu: decodes what the device decoder does not take (the CPU path, one by one)
        self.cpu_decoder = cpu_decoder
        if preprocessor.device_decode:
            if cpu_decoder is None:
                raise ValueError("a device-decoding encoder needs the CPU decoder for its fallbacks")
            check_device_decoder(preprocessor, device)

    def __call__(self, shard: DecodedShard) -> EncodedShard:
        task, errors = shard.task, list(shard.errors)
        samples = list(shard.samples)
        if shard.raw:
            samples += self._decode_on_device(shard, errors)
            samples.sort(key=lambda s: s.slot)
        finite = []  # NaN/Inf inputs never reach the codec (runtime/batching.py)
        for s in samples:
            reason = nonfinite_reason(s.array)
            if reason is None:
                finite.append(s)
            else:
                errors.append(_error_row(s, task.shard, reason))
        encoded, input_bytes = [], 0
        for part in plan_batches(finite, lambda s: tuple(s.array.shape), self.batch_size, self.batch_pixels):
            # out of memory: halves down to one sample; other failures: one by one
            results = encode_robust(lambda p: self._encode([s.array for s in p]), part)
            kill_switch("encode", task.shard)
            for s, (z, reason) in zip(part, results, strict=True):
                if reason is not None:
                    errors.append(_error_row(s, task.shard, reason))
                    continue
                encoded.append(self._sample(s, z))
                input_bytes += int(np.prod(s.array.shape))
        encoded.sort(key=lambda e: e.slot)
        histograms = HistogramAccumulator(self.codec.config.latent_bits)  # the marker's statistics
        for e in encoded:
            histograms.add(e.latent, stacked=e.latent.ndim > signal_ndim(self.codec))
        return EncodedShard(
            task=task,
            samples=encoded,
            errors=errors,
            input_bytes=input_bytes,
            statistics=histograms.to_dict(),
            decode_counts=decode_counts(encoded),
        )

    def _sample(self, s: DecodedSample, z: np.ndarray) -> EncodedSample:
        z, z_flip = (z[0], z[1]) if self.flip_pair else (z, None)
        size = self.preprocessor.input_size(s.array)
        meta = s.meta | {"input_size": list(size)}
        return EncodedSample(
            key=s.key,
            label=s.label,
            latent=z,
            meta=meta,
            latent_bytes=self._coded(z, size),
            slot=s.slot,
            bucket=meta.get("bucket"),
            latent_flip=z_flip,
            latent_flip_bytes=self._coded(z_flip, size),
        )

    def _coded(self, z: np.ndarray | None, size: tuple[int, ...]) -> bytes | None:
        if z is None or self.latent_format == "npy":
            return None
        return self.codec.to_bytes(self.torch.from_numpy(z), method=self.latent_format, size=size)

    def _encode(self, arrays: list[Any]) -> np.ndarray:
        """(B, *latent) latents; with --flip-pair (B, 2, *latent): [latent, latent of the mirror]."""
        torch = self.torch
        if isinstance(arrays[0], torch.Tensor):  # --decode gpu: pixels already on the device
            x = self.preprocessor.codec_input(torch.stack(arrays))
        else:
            x = torch.from_numpy(np.stack([self.preprocessor.codec_input(a) for a in arrays]))
            x = x.to(self.device)
        if self.flip_pair:  # the mirrored inputs ride in the same codec call (one batch of 2B)
            x = torch.cat([x, x.flip(-1)])
        lead = x.shape[: x.dim() - signal_ndim(self.codec)]  # (B,), or (B, S) for grouped stems
        z = self.codec.encode(x.reshape(-1, *x.shape[len(lead) :])).cpu().numpy()  # only int8 leaves
        z = z.reshape(*lead, *z.shape[1:])
        n = len(arrays)
        return np.stack([z[:n], z[n:]], axis=1) if self.flip_pair else z

    def _decode_on_device(self, shard: DecodedShard, errors: list[ErrorRow]) -> list[DecodedSample]:
        """--decode gpu: raw bytes -> pixels on self.device, batch_size JPEGs per decoder call.

        Inputs the device decoder does not take (probe_jpeg) or fails on go through the CPU path
        one by one, then to the device; their meta says `"decode": "cpu"` and why (counted per
        shard in the manifest). Decode failures there are error rows, as in the decode stage."""
        pre, out = self.preprocessor, []
        for i in range(0, len(shard.raw), self.batch_size):
            part = shard.raw[i : i + self.batch_size]
            try:
                results = pre.decode_batch([r.data for r in part], device=self.device)
            except Exception as err:  # noqa: BLE001 - e.g. out of device memory: the CPU path
                results = [f"device batch failed ({type(err).__name__}: {str(err)[:200]})"] * len(part)
            for r, res in zip(part, results, strict=True):
                if not isinstance(res, str):
                    meta = sample_meta(r.item, r.data, res.meta, self.cpu_decoder.cache_salt)
                    out.append(
                        DecodedSample(
                            r.item.key, r.item.label, r.slot, res.array, meta | {"decode": "device"}
                        )
                    )
                    continue
                sample = self.cpu_decoder.decode_one(r.item, r.slot, r.data, shard.task.shard)
                if isinstance(sample, ErrorRow):
                    errors.append(
                        ErrorRow.of(
                            r.item, sample.shard, sample.stage, f"{sample.reason} (device path: {res})"
                        )
                    )
                    continue
                sample.array = self.torch.from_numpy(sample.array).to(self.device)
                sample.meta |= {"decode": "cpu", "decode_fallback": res}
                out.append(sample)
        return out


def decode_counts(encoded: list[EncodedSample]) -> dict[str, int]:
    """--decode gpu: how the shard's samples were decoded (on the device / CPU fallbacks), else {}."""
    ways = [e.meta.get("decode") for e in encoded]
    if not any(ways):
        return {}
    return {"decoded_on_device": ways.count("device"), "decode_fallbacks": ways.count("cpu")}
