"""Loading and saving codecs: reference checkpoints (walloc .pth + .json) and the project's format.

Project format: `<stem>.safetensors` (weights, no pickle) + `<stem>.json`:
    {"format": "walloc-pipeline-codec/1", "name": ..., "config": {...}, "hash": "<sha256>",
     "encoder_hash": "<sha256>", "metadata": {...}}
The hash covers the config and every tensor (name, dtype, shape, bytes); it identifies the codec
in latent headers and manifests, and it is verified on load. The encoder hash covers only what
determines the latents (hashing.encoder_hash); it is verified on load where recorded, and computed
for files written before it existed (it is not part of `hash`, so adding it changes no content hash).

Reference checkpoints are loaded with `torch.load(weights_only=True)`; a file that needs pickled
objects is refused unless the caller passes `trust_pickle=True`.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pywt
import torch
from safetensors.torch import load_file, save_file

from .config import REFERENCE_KEYS, CodecConfig
from .hashing import codec_hash, encoder_hash
from .model import WaLLoC, build

FORMAT = "walloc-pipeline-codec/1"
_WAVELET_BUFFERS = {  # pytorch_wavelets buffers in reference state_dicts -> pywt filter
    "h0": "dec_lo",
    "h1": "dec_hi",
    "g0": "rec_lo",
    "g1": "rec_hi",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: the message says why and what to do."""


class UnsafeCheckpointError(CheckpointError):
    """The file needs arbitrary pickled objects to load."""


def _infer_kind(state_dict: dict[str, torch.Tensor]) -> str:
    if "wt.h0_col" in state_dict or "encoder.0.conv_in.weight" in state_dict:
        return "2d"
    if "wt.h0" in state_dict or "encoder.0.conv1.weight_v" in state_dict:
        return "1d"
    w = state_dict.get("encoder.0.weight")
    if w is not None:
        return "2d" if w.dim() == 4 else "1d"
    raise CheckpointError("cannot tell a 2-D from a 1-D codec: no encoder weights in state_dict")


def _check_wavelet_buffers(state_dict: dict[str, torch.Tensor]) -> None:
    """The reference stores its filters; refuse a checkpoint built on another wavelet."""
    wavelet = pywt.Wavelet("bior4.4")
    for key, value in state_dict.items():
        if not key.startswith(("wt.", "iwt.")):
            continue
        name = key.split(".")[1].split("_")[0]
        expected = np.sort(np.asarray(getattr(wavelet, _WAVELET_BUFFERS[name])))
        got = np.sort(value.detach().double().flatten().numpy())
        if got.shape != expected.shape or not np.allclose(got, expected, atol=1e-6):
            raise CheckpointError(f"checkpoint buffer {key} is not a bior4.4 filter; unsupported")


def from_reference(config: dict[str, Any], state_dict: dict[str, torch.Tensor]) -> WaLLoC:
    """Build a codec from a walloc config dict and its state_dict (Codec2D / Codec1D layout)."""
    kind = _infer_kind(state_dict)
    cfg = CodecConfig.from_reference(config, kind=kind)
    _check_wavelet_buffers(state_dict)
    mapped = {}
    for key, value in state_dict.items():
        if key.startswith(("wt.", "iwt.")):
            continue
        if key.startswith("encoder.0."):
            mapped["encoder." + key[len("encoder.0.") :]] = value
        elif key.startswith("decoder.1."):
            mapped["decoder." + key[len("decoder.1.") :]] = value
        elif key.startswith("post."):
            mapped[key] = value
        else:
            raise CheckpointError(f"unexpected key in reference state_dict: {key}")
    codec = build(cfg)
    missing, unexpected = codec.load_state_dict(mapped, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"reference state_dict does not match config {config}: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}"
        )
    return codec.eval()


def load_reference(path: str | Path, *, trust_pickle: bool = False) -> WaLLoC:
    """Load a published checkpoint: `X.pth` with `X.json` beside it (or a 'config' inside)."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not trust_pickle:
            raise UnsafeCheckpointError(
                f"{path} contains pickled Python objects beyond tensors, so loading it could run "
                "code. Refused. If you trust its origin, pass trust_pickle=True (CLI: "
                "--trust-pickle)."
            ) from err
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "model_state_dict" in ckpt:
        state_dict = ckpt["model_state_dict"]
    elif isinstance(ckpt, dict) and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state_dict = ckpt
    else:
        raise CheckpointError(f"{path}: expected a dict with 'model_state_dict'")
    config_path = path.with_suffix(".json")
    if config_path.exists():
        config = json.loads(config_path.read_text())
    else:
        config = _embedded_config(ckpt)
        if config is None:
            raise CheckpointError(f"{path}: no config; put the codec's JSON beside it as {config_path.name}")
    codec = from_reference(config, state_dict)
    codec.source = str(path)
    return codec


def _embedded_config(ckpt: dict) -> dict | None:
    """A config stored inside the checkpoint: under 'config' (dict or namespace) or at top level."""
    embedded = ckpt.get("config")
    if embedded is not None and not isinstance(embedded, dict):
        embedded = vars(embedded)
    if isinstance(embedded, dict):
        return embedded
    if all(k in ckpt for k in REFERENCE_KEYS):
        return {k: v for k, v in ckpt.items() if k != "model_state_dict"}
    return None


def save(codec: WaLLoC, path: str | Path, *, name: str | None = None, metadata: dict | None = None) -> Path:
    """Write `<path>.safetensors` + `<path>.json`; returns the JSON path. The hash is recorded.

    Each file is written beside its place and renamed into it, weights first: an interrupted save
    (a training job stopped mid-checkpoint) leaves the previous pair whole, never half a file, and
    the JSON's hash catches a new weights file beside an old JSON."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    stem.parent.mkdir(parents=True, exist_ok=True)
    state_dict = {k: v.detach().cpu().contiguous() for k, v in codec.state_dict().items()}
    digest = codec_hash(codec.config, state_dict)
    weights = Path(str(stem) + ".safetensors")
    save_file(state_dict, str(weights) + ".part")
    os.replace(str(weights) + ".part", weights)
    description = {
        "format": FORMAT,
        "name": name or stem.name,
        "config": codec.config.to_dict(),
        "hash": digest,
        "encoder_hash": encoder_hash(codec.config, state_dict),
        "metadata": metadata or {},
    }
    json_path = Path(str(stem) + ".json")
    part = Path(str(json_path) + ".part")
    part.write_text(json.dumps(description, indent=2, sort_keys=True) + "\n")
    os.replace(part, json_path)
    return json_path


def load_project(path: str | Path) -> WaLLoC:
    """Load the project's format from the .json, the .safetensors, or their common stem."""
    path = Path(path)
    stem = path.with_suffix("") if path.suffix in (".json", ".safetensors") else path
    json_path, weights_path = Path(str(stem) + ".json"), Path(str(stem) + ".safetensors")
    if not json_path.exists() or not weights_path.exists():
        raise CheckpointError(f"codec {stem}: need both {json_path.name} and {weights_path.name}")
    description = json.loads(json_path.read_text())
    if description.get("format") != FORMAT:
        raise CheckpointError(f"{json_path}: not a codec description (format {description.get('format')!r})")
    config = CodecConfig.from_dict(description["config"])
    state_dict = load_file(str(weights_path))
    digest = codec_hash(config, state_dict)
    if digest != description["hash"]:
        raise CheckpointError(
            f"{weights_path}: content hash {digest[:12]} does not match the recorded "
            f"{description['hash'][:12]}; the weights were modified or corrupted"
        )
    encoder_digest = encoder_hash(config, state_dict)
    recorded = description.get("encoder_hash")
    if recorded is not None and recorded != encoder_digest:
        raise CheckpointError(
            f"{json_path}: encoder hash {encoder_digest[:12]} does not match the recorded "
            f"{recorded[:12]}; the description was edited or written by an incompatible version"
        )
    codec = build(config)
    codec.load_state_dict(state_dict, strict=True)
    codec.eval()
    codec.frozen_hash = digest
    codec.frozen_encoder_hash = encoder_digest
    codec.name = description.get("name")
    codec.metadata = description.get("metadata", {})
    codec.source = str(json_path)
    return codec
