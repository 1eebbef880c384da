"""Batched JPEG decoding and resize/crop on a torch device: the `--decode gpu` path. No I/O.

Why: on a GPU node, PIL decoding on the CPUs feeds the encoder ~6x slower than the GPU encodes
(docs/gpu.md). Here JPEG bytes become uint8 (C, H, W) tensors on the device, in batches, and stay
there for the encoder:

    probe (host, header only)  ->  decode_jpeg(list of byte tensors, device)  torchvision (nvJPEG on CUDA)
                                   or Pillow -> uint8 tensor -> device         torchvision absent (CPU CI)
                               ->  EXIF orientation (flips / rotations on the device)
                               ->  resize + crop with the CPU path's plan (image._resize_plan):
                                   antialiased bicubic interpolation, batched per input size

Only what the device decoder is known to accept goes this way; `probe` returns a reason for the rest
(not a JPEG, CMYK/YCCK, no end-of-image marker, over the pixel cap, unreadable header), and
`decode_batch` returns one for any sample the decoder fails on: the runtime decodes those with the
CPU path (image.decode_image) and counts them. Pixels differ slightly from the CPU path (another
IDCT, another resampler, no JPEG draft mode): the manifest's preprocessing records the backend and
the resize implementation (`DeviceDecodeSpec.to_dict`), so they are part of the run's identity.
"""

from __future__ import annotations

import contextlib
import io
import struct
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image, ImageOps

from ..config import ConfigurationError
from .errors import DecodeError
from .image import (
    Decoded,
    ImagePolicy,
    ImagePreprocessor,
    _refuse_data_warnings,
    _resize_plan,
    bucket_name,
    decode_image,
)
from .integrity import check_jpeg

RESIZE_IMPL = "torch interpolate bicubic antialias (float32), round half-even, uint8"
BACKENDS = ("torchvision-nvjpeg", "torchvision-libjpeg", "pillow")


def torchvision_io():
    """torchvision.io when it imports and can decode, else None (it is optional: GPU image only)."""
    try:
        import torchvision.io as tvio

        tvio.decode_jpeg  # noqa: B018 - a stub module (benchmarks/_reference.py) has no decoder
    except Exception:  # noqa: BLE001 - ImportError, or a wheel built for another torch (RuntimeError)
        return None
    return tvio


def available_backend(device: str) -> str:
    """The decoder this process would use on `device`; raises when `device` is CUDA without one."""
    import torch

    kind = torch.device(device).type
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigurationError(
                "--decode gpu needs a CUDA GPU, and torch.cuda.is_available() is False here "
                "(use --decode cpu, or run on a GPU node)"
            )
        if torchvision_io() is None:
            raise ConfigurationError(
                "--decode gpu decodes with torchvision.io.decode_jpeg (nvJPEG), and torchvision does "
                "not import here: install the torchvision that matches torch (the CUDA image has it)"
            )
        return "torchvision-nvjpeg"
    return "torchvision-libjpeg" if torchvision_io() is not None else "pillow"


@dataclass(frozen=True)
class DeviceDecodeSpec:
    """Which decoder and resizer produce the pixels (they change the latents: part of the identity)."""

    device: str  # torch device the pixels are decoded to ("cuda", "cuda:1", "cpu" in tests)
    backend: str  # one of BACKENDS
    resize: str = RESIZE_IMPL

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"unknown device decode backend {self.backend!r}; expected one of {BACKENDS}")

    @classmethod
    def for_device(cls, device: str) -> DeviceDecodeSpec:
        return cls(device=device, backend=available_backend(device))

    def to_dict(self) -> dict[str, Any]:
        import torch

        return {
            "path": "device",
            "device": torch.device(self.device).type,  # the index does not change the pixels
            "backend": self.backend,
            "resize": self.resize,
            "fallback": "cpu path (pillow) per sample",
        }


@dataclass(frozen=True)
class Probe:
    """What the JPEG header says, read on the host without decoding pixels."""

    size: tuple[int, int]  # stored (W, H)
    orientation: int  # EXIF orientation, 1..8
    mode: str  # Pillow's mode: RGB or L here

    @property
    def oriented_size(self) -> tuple[int, int]:
        w, h = self.size
        return (h, w) if self.orientation in (5, 6, 7, 8) else (w, h)


_SOF = {0xC0: "baseline", 0xC1: "extended", 0xC2: "progressive"}  # Huffman, 8-bit: nvJPEG's domain
_OTHER_SOF = {0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # lossless/hierarchical/arithmetic


_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8}


def _exif_orientation(tiff: bytes) -> int | None:
    """Orientation (tag 0x0112, SHORT) from IFD0 of an EXIF TIFF block; None if anything is unusual."""
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    (ifd,) = struct.unpack(order + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return None
    (count,) = struct.unpack(order + "H", tiff[ifd : ifd + 2])
    if ifd + 2 + 12 * count > len(tiff):
        return None  # an IFD larger than its block: Pillow's reader (and the CPU path) refuse it
    orientation = 1
    for k in range(count):
        entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
        tag, kind, n, value = struct.unpack(order + "HHII", entry)
        size = n * _TIFF_TYPE_SIZE.get(kind, 0)
        if size == 0 or (size > 4 and value + size > len(tiff)):
            return None  # unknown type, or a value past the block: Pillow warns, the CPU path refuses
        if tag == 0x0112:
            if kind != 3:
                return None
            orientation = struct.unpack(order + "H", entry[8:10])[0]
    return orientation


def _fast_header(data: bytes) -> tuple[tuple[int, int], int, str] | str | None:
    """((W, H), orientation, mode) or a reason from the JPEG markers, without Pillow (~10x faster).

    None when the header holds something Pillow reads differently (several EXIF blocks, XMP, an
    Adobe RGB transform, odd EXIF): the caller then asks Pillow."""
    pos, n, orientation, exif_blocks = 2, len(data), 1, 0
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        body = data[pos + 4 : pos + 2 + length]
        if marker == 0xE1 and body.startswith(b"Exif\x00\x00"):
            exif_blocks += 1
            value = _exif_orientation(body[6:])
            if value is None or exif_blocks > 1:
                return None
            orientation = value
        elif marker == 0xE1 or (marker == 0xEE and body.startswith(b"Adobe")):
            return None  # XMP (Pillow reads orientation from it) / Adobe colour transform
        elif marker in _OTHER_SOF:
            return "JPEG coding the device decoder does not take (lossless, hierarchical or arithmetic)"
        elif marker in _SOF:
            if len(body) < 6:
                return None
            bits, h, w, comps = struct.unpack(">BHHB", body[:6])
            if bits != 8:
                return f"{bits}-bit JPEG"
            mode = {1: "L", 3: "RGB"}.get(comps)
            if mode is None:
                return None  # CMYK / YCCK: Pillow names the mode
            return (w, h), orientation, mode
        elif marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def probe_jpeg(data: bytes, policy: ImagePolicy) -> Probe | str:
    """The header of a JPEG the device decoder accepts, or why this input goes to the CPU path."""
    if not data.startswith(b"\xff\xd8"):
        return "not a JPEG"
    if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "no JPEG end-of-image marker (truncated?)"
    try:
        check_jpeg(data)  # nvJPEG, like libjpeg, may decode a damaged scan without an error
    except DecodeError as err:
        return str(err)  # the CPU path refuses it with this reason
    if policy.channels != 3:
        return f"the device path decodes to RGB, the codec has {policy.channels} channels"
    fast = _fast_header(data)
    if isinstance(fast, str):
        return fast
    if fast is not None:
        (w, h), orientation, mode = fast
        if w * h > policy.max_pixels:
            return "over the pixel cap"
        if w == 0 or h == 0:
            return "JPEG without a frame size"
        return Probe(size=(w, h), orientation=orientation if 1 <= orientation <= 8 else 1, mode=mode)
    return _pillow_probe(data, policy)


def _pillow_probe(data: bytes, policy: ImagePolicy) -> Probe | str:
    """probe_jpeg through Pillow's header reader: the reference for what _fast_header reads."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            fmt, mode = img.format, img.mode
            orientation = int(img.getexif().get(0x0112, 1))  # broken EXIF: the CPU path refuses it
            _refuse_data_warnings(caught, "JPEG (its header or metadata)")
    except DecodeError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001
        return f"header unreadable ({type(err).__name__})"
    if fmt != "JPEG":
        return f"not a JPEG ({fmt})"
    if mode not in ("RGB", "L"):
        return f"JPEG in mode {mode} (the device decoder handles YCbCr and greyscale)"
    if w * h > policy.max_pixels:
        return "over the pixel cap"
    return Probe(size=(w, h), orientation=orientation if 1 <= orientation <= 8 else 1, mode=mode)


def orient(x, orientation: int):
    """Apply EXIF orientation to (..., H, W) as Pillow's ImageOps.exif_transpose does."""
    if orientation == 2:
        return x.flip(-1)
    if orientation == 3:
        return x.flip(-2, -1)
    if orientation == 4:
        return x.flip(-2)
    if orientation == 5:
        return x.transpose(-2, -1)
    if orientation == 6:
        return x.rot90(-1, (-2, -1))
    if orientation == 7:
        return x.transpose(-2, -1).flip(-2, -1)
    if orientation == 8:
        return x.rot90(1, (-2, -1))
    return x


def _decode_pillow(data: bytes):
    """Pillow -> uint8 (3, H, W) tensor on the host, stored orientation (the no-torchvision backend)."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        img = Image.open(io.BytesIO(data))
        img.load()
    arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))


def decode_jpegs(datas: list[bytes], spec: DeviceDecodeSpec) -> list[Any]:
    """Decode JPEG bytes to uint8 (3, H, W) tensors on spec.device, in stored orientation.

    Returns a tensor or an exception per input: one bad input must not cost its batch (decode_jpeg
    raises for the whole list, so a failed batch is retried one by one)."""
    import torch

    if spec.backend == "pillow":
        out: list[Any] = []
        for d in datas:
            try:
                out.append(_decode_pillow(d).to(spec.device))
            except Exception as err:  # noqa: BLE001
                out.append(err)
        return out
    tvio = torchvision_io()
    if tvio is None:
        raise RuntimeError(f"decode backend {spec.backend} needs torchvision, which does not import here")
    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    mode = tvio.ImageReadMode.RGB
    try:
        return list(tvio.decode_jpeg(tensors, mode=mode, device=spec.device))
    except Exception:  # noqa: BLE001 - find the culprit(s)
        pass
    out = []
    for t in tensors:
        try:
            out.append(tvio.decode_jpeg([t], mode=mode, device=spec.device)[0])
        except Exception as err:  # noqa: BLE001
            out.append(err)
    return out


def resize_crop(images: list[Any], policy: ImagePolicy) -> list[Any]:
    """uint8 (C, H, W) tensors (oriented) -> the policy's size and crop, batched per input size.

    The plan (resized size, crop box) is the CPU path's; the resampler is torch's antialiased
    bicubic (Pillow's kernel, a = -0.5, computed in float32), rounded half-even to uint8."""
    import torch
    import torch.nn.functional as F

    out: list[Any] = [None] * len(images)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault((int(img.shape[-2]), int(img.shape[-1])), []).append(i)
    for (h, w), idx in groups.items():
        (rw, rh), (left, top, right, bottom) = _resize_plan(w, h, policy)
        x = torch.stack([images[i] for i in idx])
        if (rh, rw) != (h, w):
            y = F.interpolate(x.float(), size=(rh, rw), mode="bicubic", antialias=True, align_corners=False)
            x = y.round_().clamp_(0, 255).to(torch.uint8)
        x = x[..., top:bottom, left:right]
        for j, i in enumerate(idx):
            out[i] = x[j].contiguous()
    return out


@dataclass(frozen=True)
class DeviceImagePreprocessor(ImagePreprocessor):
    """The image preprocessor of `--decode gpu`: batched decode on spec.device, CPU path as fallback.

    `decode` (one input, on the host) stays the CPU path: the runtime uses it for fallbacks."""

    spec: DeviceDecodeSpec | None = field(default=None)
    device_decode: ClassVar[bool] = True  # the runtime's cue: bytes go to the encoder actors

    def __post_init__(self) -> None:
        if self.spec is None:
            raise ValueError("DeviceImagePreprocessor needs a DeviceDecodeSpec")

    def decode(self, data: bytes, item: Any = None) -> Decoded:
        return decode_image(data, self.policy)

    def decode_batch(self, datas: list[bytes], device: str | None = None) -> list[Decoded | str]:
        """Each input decoded and resized on the device (Decoded with a tensor), or why it falls back."""
        spec = self.spec if device is None else DeviceDecodeSpec(device, self.spec.backend, self.spec.resize)
        probes = [probe_jpeg(d, self.policy) for d in datas]
        todo = [i for i, p in enumerate(probes) if isinstance(p, Probe)]
        results: list[Decoded | str] = [p if isinstance(p, str) else "" for p in probes]
        decoded = decode_jpegs([datas[i] for i in todo], spec)
        ready: list[tuple[int, Any]] = []
        for i, t in zip(todo, decoded, strict=True):
            p = probes[i]
            if isinstance(t, BaseException):
                results[i] = f"device decoder refused it ({type(t).__name__}: {str(t)[:200]})"
            elif tuple(t.shape) != (3, p.size[1], p.size[0]):
                results[i] = f"device decoder gave shape {tuple(t.shape)} for a {p.size[0]}x{p.size[1]} JPEG"
            else:
                ready.append((i, orient(t, p.orientation)))
        pixels = resize_crop([t for _, t in ready], self.policy)
        for (i, _), x in zip(ready, pixels, strict=True):
            p = probes[i]
            (rw, rh), box = _resize_plan(*p.oriented_size, self.policy)
            meta = {
                "original_size": list(p.oriented_size),
                "mode": p.mode,
                "resized_size": [rw, rh],
                "crop_box": list(box),
            }
            if self.policy.buckets:
                meta["bucket"] = bucket_name((box[2] - box[0], box[3] - box[1]))
            results[i] = Decoded(array=x, meta=meta)
        return results

    def codec_input(self, pixels: Any) -> Any:
        """uint8 -> float32 in [-0.5, 0.5]; tensors stay on their device (same arithmetic as numpy)."""
        if isinstance(pixels, np.ndarray):
            return super().codec_input(pixels)
        return pixels.float().div_(255.0).sub_(0.5)

    def input_size(self, pixels: Any) -> tuple[int, ...]:
        return tuple(int(s) for s in pixels.shape[1:])

    def to_dict(self) -> dict[str, Any]:
        return super().to_dict() | {"decode": self.spec.to_dict()}


def pixels_on_host(x: Any) -> np.ndarray:
    """A device tensor or an array -> numpy uint8 (C, H, W) (for tests and the benchmark)."""
    return x if isinstance(x, np.ndarray) else x.cpu().numpy()


def pil_oriented(data: bytes) -> Image.Image:
    """Pillow's decode with EXIF orientation applied (what the CPU path sees before resizing)."""
    img = Image.open(io.BytesIO(data))
    with contextlib.suppress(Exception):
        img = ImageOps.exif_transpose(img)
    return img
