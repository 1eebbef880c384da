"""Import the reference implementation (walloc 1.2.1) for side-by-side benchmarks and checks.

walloc imports torchvision only for `ToPILImage` / `PILToTensor` (image helpers we never call), and
the PyPI torchvision wheel does not import beside this project's torch build; so a stub
`torchvision.transforms` module is installed in sys.modules first, unless a real one imports.
"""

from __future__ import annotations

import json
import sys
import types

import torch


def _stub_torchvision() -> None:
    if "torchvision.transforms" in sys.modules:
        return
    # diffusers probes for torchvision with importlib.util.find_spec when first imported, which a
    # stub without a spec breaks: let it probe (and import the blocks walloc needs) first.
    import diffusers.models.autoencoders  # noqa: F401

    tv = types.ModuleType("torchvision")
    transforms = types.ModuleType("torchvision.transforms")

    class _Unavailable:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("torchvision is stubbed out in the benchmarks (see benchmarks/_reference.py)")

    transforms.ToPILImage = type("ToPILImage", (_Unavailable,), {})
    transforms.PILToTensor = type("PILToTensor", (_Unavailable,), {})
    tv.transforms = transforms
    tv.__path__ = []  # a package, so `from torchvision.x import y` fails cleanly for other submodules
    sys.modules["torchvision"] = tv
    sys.modules["torchvision.transforms"] = transforms


def import_walloc():
    """`walloc.walloc` (the module with Codec2D / Codec1D), or ImportError with a hint."""
    _stub_torchvision()
    try:
        import walloc.walloc as W
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            f"the reference needs `pip install --no-deps walloc==1.2.1` and the [bench] extras: {e}"
        ) from e
    return W


def build_reference(kind: str, config: dict, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised reference codec in eval mode (Codec2D for '2d', Codec1D for '1d')."""
    W = import_walloc()
    torch.manual_seed(seed)
    cls = W.Codec2D if kind == "2d" else W.Codec1D
    return cls(**config).eval().requires_grad_(False)


@torch.no_grad()
def reference_encode_linear(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's encoder output before companding (its `latent_linear`)."""
    return ref.encoder[0](ref.wavelet_analysis(x, J=ref.J))


@torch.no_grad()
def reference_encode(ref: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The reference's quantized latents (float, integer-valued): encoder(wavelet_analysis(x))."""
    return ref.encoder(ref.wavelet_analysis(x, J=ref.J))


@torch.no_grad()
def rescale_encoder(ref: torch.nn.Module, x: torch.Tensor) -> float:
    """Scale the last encoder layer so latents span the quantizer range (std = max_int / 1.85).

    Random initialisation leaves latents near zero, where every latent rounds to 0 and the
    identical-latents check would prove nothing. Returns the factor applied.
    """
    layer = ref.encoder[0]
    if not isinstance(layer, (torch.nn.Conv1d, torch.nn.Conv2d)):
        layer = layer.conv_out if hasattr(layer, "conv_out") else layer.conv2
    target = (2 ** (ref.latent_bits - 1) - 1) / 1.85
    std = reference_encode_linear(ref, x).std().item()
    factor = target / max(std, 1e-12)
    layer.weight.mul_(factor)
    if layer.bias is not None:
        layer.bias.mul_(factor)
    return factor


def to_ours(ref: torch.nn.Module, config: dict):
    """Our codec with the reference's weights (pipeline.codec.from_reference)."""
    from pipeline.codec import from_reference

    codec = from_reference(json.loads(json.dumps(config)), ref.state_dict())
    return codec.eval().requires_grad_(False)
