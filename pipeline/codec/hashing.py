"""Content hashes that identify a codec, independent of file format.

Two hashes per codec:
- `codec_hash`: the whole codec (config + every weight). Two codecs with the same hash decode alike.
- `encoder_hash`: only what determines the latents: the wavelet transform, the encoder's config and
  weights, and the quantizer (latent_bits; the compander has no parameters). Codecs that share it
  write identical latents, so latents written by one may be decoded by any other, e.g. a better
  decoder trained later on the same frozen encoder (rgb-16x-klt -> rgb-16x).
"""

from __future__ import annotations

import hashlib
import json

import torch

from .config import CodecConfig

# what the encoder side of a config is; the rest (Nd, decoder, post_filter) is decoder-only. Ne is
# kept even for 1x1 encoders (it is None there in every bundled codec), so no config drops out silently.
ENCODER_CONFIG_KEYS = ("kind", "channels", "J", "latent_dim", "latent_bits", "lightweight_encode", "Ne")
# the transform is fixed in code (wavelets.py); naming it here means a change of transform must
# change this string, and with it every encoder hash
TRANSFORM = "wpt:bior4.4:periodization"
ENCODER_PREFIXES = ("encoder.",)  # state_dict keys of the encoder; the compander has no parameters


def _update_with_tensors(h, state_dict: dict[str, torch.Tensor]) -> None:
    for key in sorted(state_dict):
        t = state_dict[key].detach().cpu().contiguous()
        h.update(f"\n{key}:{t.dtype}:{tuple(t.shape)}\n".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def codec_hash(config: CodecConfig, state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the canonical config JSON and every tensor (name, dtype, shape, bytes)."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    _update_with_tensors(h, state_dict)
    return h.hexdigest()


def encoder_hash(config: CodecConfig, state_dict: dict[str, torch.Tensor]) -> str:
    """sha256 over the transform's name, the encoder's config keys and the encoder's tensors."""
    h = hashlib.sha256(b"walloc-pipeline-encoder/1\n" + TRANSFORM.encode() + b"\n")
    encoder_config = {k: config.to_dict()[k] for k in ENCODER_CONFIG_KEYS}
    h.update(json.dumps(encoder_config, sort_keys=True).encode())
    _update_with_tensors(h, {k: v for k, v in state_dict.items() if k.startswith(ENCODER_PREFIXES)})
    return h.hexdigest()
