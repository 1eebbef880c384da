"""Content hash that identifies a codec: config plus weights, independent of file format."""

from __future__ import annotations

import hashlib
import json

import torch

from .config import CodecConfig


def codec_hash(config: CodecConfig, state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the canonical config JSON and every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"\n{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()
