"""WaLLoC codec library: wavelet packet transform, encoders/decoders, bottleneck, checkpoints.

Public API (stable):
    from_reference(config, state_dict) -> codec     walloc 1.2.1 Codec2D/Codec1D layouts
    load(name_or_path, trust_pickle=False) -> codec bundled name, project format, or reference .pth
    save(codec, path, name=..., metadata=...)       safetensors + JSON with content hash
    codec.analysis(x) / codec.synthesis(X)          J-level wavelet packet transform and inverse
    codec.encode(x) -> int8 latents, codec.decode(z) -> reconstruction in [-0.5, 0.5]
    codec.to_bytes(z) / codec.from_bytes(b)         lossless entropy coding with a header (methods:
                                                    entropy.METHODS; `context` is the smallest)
    codec.hash / codec.encoder_hash                 whole codec / what determines the latents:
                                                    from_bytes accepts latents of the same encoder
    codec.identity()                                {name, hash, encoder_hash, config}: the manifest's
                                                    "codec" section
"""

from .checkpoint import (
    CheckpointError,
    UnsafeCheckpointError,
    from_reference,
    load_project,
    load_reference,
    save,
)
from .config import CodecConfig
from .model import LATENT_DTYPE, WaLLoC, WaLLoC1D, WaLLoC2D, build
from .zoo import load

__all__ = [
    "LATENT_DTYPE",
    "CheckpointError",
    "CodecConfig",
    "UnsafeCheckpointError",
    "WaLLoC",
    "WaLLoC1D",
    "WaLLoC2D",
    "build",
    "from_reference",
    "load",
    "load_project",
    "load_reference",
    "save",
]
