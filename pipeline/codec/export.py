"""Edge export of the encoder side (WPT + encoder + quantizer) to TorchScript and ONNX.

Sensors and phones run only the encoder. The library's WPT (wavelets.py) is tuned for CPU throughput
with index_select/as_strided tile GEMMs and chunking, which traces badly. Here, for one fixed input
shape, each fused packet stage along an axis is the same block-circulant operator written as a cyclic
extension (slices and a concat) followed by a strided convolution with constant weights:

    out_block[i] = sum_k taps[k] @ in_block[i + first + k]   ==   conv(extend(x), w, stride=P)

with w[p, 0, k*P + q] = taps[k][p, q]. Each stage costs K*P MACs per sample, so the cost is linear in
the signal size (a dense per-axis matrix would cost H + W MACs per pixel). Stages of one level each
give the fewest MACs (10 per sample per level); the library's plan (default: up to 3 fused levels,
64 MACs per sample per stage) gives fewer, larger convolutions and ran several times faster in
onnxruntime on CPU. Either way the result is the library's layout exactly (checked against
wavelets.analysis_2d / analysis_1d).

    python -m pipeline.codec.export --codec NAME_OR_PATH --shape 1,3,256,256 --format onnx --out enc.onnx
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import math
import sys
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from . import wavelets
from .model import LATENT_DTYPE, WaLLoC, centered_padding
from .zoo import load

FORMATS = ("onnx", "torchscript")


def split_levels(levels: int, levels_per_stage: int | None) -> tuple[int, ...]:
    """Packet levels per stage: the library's fused plan (None) or stages of at most levels_per_stage."""
    if levels_per_stage is None:
        return wavelets.plan_stages(levels)
    if not 1 <= levels_per_stage <= wavelets.MAX_LEVELS_PER_STAGE:
        raise ValueError(f"levels_per_stage must be in [1, {wavelets.MAX_LEVELS_PER_STAGE}]")
    full, rest = divmod(levels, levels_per_stage)
    return (levels_per_stage,) * full + ((rest,) if rest else ())


class PacketAxis(nn.Module):
    """J packet levels along one axis (H: dim 2, W: dim 3) of a fixed-size (M, 1, H, W) tensor.

    Returns (M, 2^J, H', W') with the bands in the library's order (level 1 is the most
    significant bit), because each stage's bands are folded outside the next stage's. Sizes are
    Python constants so that traced graphs hold no shape arithmetic.
    """

    def __init__(self, size: tuple[int, int], levels: int, dim: int, levels_per_stage: int | None = None):
        super().__init__()
        if dim not in (2, 3):
            raise ValueError("dim must be 2 (H) or 3 (W)")
        length = size[dim - 2]
        if length % (1 << levels):
            raise ValueError(f"axis length {length} is not divisible by 2^J = {1 << levels}")
        self.dim = dim
        self.bands = 1 << levels
        self.plan = split_levels(levels, levels_per_stage)
        self.steps: list[tuple[int, int]] = []  # (P, K) per stage
        self.sizes: list[tuple[int, int]] = []  # (H', W') after each stage
        self.wraps: list[tuple[int, int, int]] = []  # (left, right, length) of each cyclic extension
        n = length
        for i, lv in enumerate(self.plan):
            op = wavelets.stage(lv).analysis
            p, k = op.block, op.taps.shape[0]
            nb = n // p
            kernel = (k * p, 1) if dim == 2 else (1, k * p)  # strided along this axis only
            weight = torch.from_numpy(op.taps.transpose(1, 0, 2).reshape(p, 1, *kernel)).float()
            self.register_buffer(f"weight{i}", weight)
            left, right = -op.first * p, (op.first + k - 1) * p  # cyclic extension: taps reach both sides
            if max(left, right) > n:  # a short axis wraps more than once: gather with a constant index
                self.register_buffer(f"index{i}", (torch.arange((nb + k - 1) * p) - left) % n)
            self.steps.append((p, k))
            self.wraps.append((left, right, n))
            n = nb
            self.sizes.append((n, size[1]) if dim == 2 else (size[0], n))

    def macs_per_sample(self) -> int:
        """Each stage computes every sample once from K*P inputs."""
        return sum(p * k for p, k in self.steps)

    def _extend(self, x: Tensor, i: int) -> Tensor:
        """Periodic extension of stage i's input: plain slices and a concat (Slice/Concat in ONNX)."""
        if hasattr(self, f"index{i}"):
            return x.index_select(self.dim, getattr(self, f"index{i}"))
        left, right, n = self.wraps[i]
        return torch.cat([x.narrow(self.dim, n - left, left), x, x.narrow(self.dim, 0, right)], dim=self.dim)

    def forward(self, x: Tensor) -> Tensor:
        stride = [1, 1]
        for i, (p, _) in enumerate(self.steps):
            x = self._extend(x, i)
            stride[self.dim - 2] = p
            x = F.conv2d(x, getattr(self, f"weight{i}"), stride=tuple(stride))  # (M', P, H', W')
            x = x.reshape(-1, 1, *self.sizes[i])
        return x.reshape(-1, self.bands, *self.sizes[-1])


def band_order_2d(levels: int) -> Tensor:
    """Gather index from (r, s) band order (H-axis band major) to the reference's interleaved order.

    The reference's channel is sum_k (2 s_k + r_k) 4^(J-k) with r_k / s_k the H / W bits of level k.
    """
    src = []
    for ch in range(4**levels):
        r = s = 0
        for k in range(1, levels + 1):
            f = (ch >> (2 * (levels - k))) & 3
            r, s = 2 * r + (f & 1), 2 * s + (f >> 1)
        src.append(r * (1 << levels) + s)
    return torch.tensor(src)


def _frozen_copy(module: nn.Module) -> nn.Module:
    """An eval-mode copy with weight_norm (hook or parametrization) folded into plain weights.

    Baked weights give simpler, smaller graphs. The hook-style weight_norm leaves a derived (non-leaf)
    `weight` tensor that deepcopy refuses, so those are copied detached through the memo.
    """
    memo = {id(m.weight): m.weight.detach().clone() for m in module.modules() if hasattr(m, "weight_g")}
    module = copy.deepcopy(module, memo)
    for m in module.modules():
        if hasattr(m, "weight_g") and hasattr(m, "weight_v"):
            torch.nn.utils.remove_weight_norm(m)
        elif torch.nn.utils.parametrize.is_parametrized(m, "weight"):
            torch.nn.utils.parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
    return module.eval().requires_grad_(False)


class EncoderGraph(nn.Module):
    """The exportable encoder side for one fixed input shape: float [-0.5, 0.5] -> int8 latents.

    Equals codec.encode(x) up to float rounding order (latents may differ by one only where the
    companded value sits at a rounding boundary). Shapes that are not multiples of 2^J are padded
    in the graph exactly as codec.encode pads them.
    """

    def __init__(self, codec: WaLLoC, input_shape: Sequence[int], *, levels_per_stage: int | None = None):
        super().__init__()
        c = codec.config
        dims = 2 if c.kind == "2d" else 1
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != dims + 2:
            raise ValueError(f"a {c.kind} codec takes (B, C, {'H, W' if dims == 2 else 'L'}), got {shape}")
        if shape[1] != c.channels:
            raise ValueError(f"codec takes {c.channels} channels, shape has {shape[1]}")
        if min(shape) < 1:
            raise ValueError(f"shape must be positive, got {shape}")
        self.kind = c.kind
        self.J = c.J
        self.input_shape = shape
        pads = [centered_padding(s, c.block) for s in shape[2:]]
        self.pad = [p for pair in reversed(pads) for p in pair]  # F.pad order: last axis first
        signal = [s + a + b for s, (a, b) in zip(shape[2:], pads, strict=True)]
        self.pad_mode = (
            "reflect" if all(max(p) < s for p, s in zip(pads, shape[2:], strict=True)) else "replicate"
        )
        self.signal_shape = tuple(signal)
        if dims == 2:
            h, w = signal
            self.h_axis = PacketAxis((h, w), c.J, dim=2, levels_per_stage=levels_per_stage)
            self.w_axis = PacketAxis((h >> c.J, w), c.J, dim=3, levels_per_stage=levels_per_stage)
            self.register_buffer("band_order", band_order_2d(c.J))
        else:
            self.w_axis = PacketAxis((1, signal[0]), c.J, dim=3, levels_per_stage=levels_per_stage)
        self.encoder = _frozen_copy(codec.encoder)
        self.compander = copy.deepcopy(codec.compander).eval()

    def wavelet_shape(self) -> tuple[int, ...]:
        """Shape of the packet coefficients the encoder sees."""
        b, ch = self.input_shape[:2]
        bands = (4 if self.kind == "2d" else 2) ** self.J
        return (b, ch * bands, *(s >> self.J for s in self.signal_shape))

    def analysis(self, x: Tensor) -> Tensor:
        """The J-level packet transform in the reference's layout (= wavelets.analysis_2d / _1d)."""
        b, ch = self.input_shape[:2]
        if any(self.pad):
            x = F.pad(x, self.pad, mode=self.pad_mode)
        if self.kind == "1d":
            (length,) = self.signal_shape
            y = self.w_axis(x.reshape(b * ch, 1, 1, length))  # (B*C, 2^J, 1, n)
            return y.reshape(self.wavelet_shape())
        h, w = self.signal_shape
        y = self.h_axis(x.reshape(b * ch, 1, h, w))  # (B*C, 2^J r-bands, nh, W)
        y = self.w_axis(y.reshape(-1, 1, h >> self.J, w))  # (B*C*2^J, 2^J s-bands, nh, nw)
        y = y.reshape(b, ch, 4**self.J, h >> self.J, w >> self.J).index_select(2, self.band_order)
        return y.reshape(self.wavelet_shape())

    def continuous(self, x: Tensor) -> Tensor:
        """The companded latent before rounding: tells which latents sit at a rounding boundary."""
        return self.compander.to_uniform(self.encoder(self.analysis(x)))

    def forward(self, x: Tensor) -> Tensor:
        return torch.round(self.continuous(x)).to(LATENT_DTYPE)


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence torch.jit's deprecation notices and the tracer's notes that shape checks became constants
    (the graph is for one fixed shape by design)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", "Constant folding - Only steps=1", UserWarning)  # padding's pads
        yield


def _example(graph: EncoderGraph) -> Tensor:
    return torch.rand(graph.input_shape, generator=torch.Generator().manual_seed(0)) - 0.5


def export_torchscript(
    codec: WaLLoC, input_shape: Sequence[int], path: str | Path, *, levels_per_stage: int | None = None
) -> Path:
    """Trace the encoder side for a fixed shape and save it (load with torch.jit.load)."""
    graph = EncoderGraph(codec, input_shape, levels_per_stage=levels_per_stage).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_tracing():
        traced = torch.jit.trace(graph, (_example(graph),), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def export_onnx(
    codec: WaLLoC,
    input_shape: Sequence[int],
    path: str | Path,
    *,
    opset: int = 17,
    levels_per_stage: int | None = None,
) -> Path:
    """Export the encoder side for a fixed shape to one self-contained ONNX file (input x, output latent)."""
    graph = EncoderGraph(codec, input_shape, levels_per_stage=levels_per_stage).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), _quiet_tracing():
        torch.onnx.export(
            graph,
            (_example(graph),),
            str(path),
            dynamo=False,  # the TorchScript-based exporter: static shapes, a plain small graph
            opset_version=opset,
            input_names=["x"],
            output_names=["latent"],
            do_constant_folding=True,
        )
    return path


def _matmul_macs(fn, *args: Tensor) -> int:
    """MACs of the conv/matmul/attention ops fn runs (FLOP counter / 2; elementwise ops not counted)."""
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        fn(*args)
    return counter.get_total_flops() // 2


def encoder_macs_per_pixel(
    codec: WaLLoC, input_shape: Sequence[int], *, levels_per_stage: int | None = None
) -> dict[str, float]:
    """MACs of the exported graph per input pixel (2-D: one H x W position, all channels; 1-D: one frame).

    WPT MACs are analytic (K*P per sample per stage per axis); the encoder's are counted on meta
    tensors, so the shape costs nothing to evaluate. Activations, norms and companding are not counted.
    """
    graph = EncoderGraph(codec, input_shape, levels_per_stage=levels_per_stage)
    b, ch = graph.input_shape[:2]
    samples = b * ch * math.prod(graph.signal_shape)
    per_sample = graph.w_axis.macs_per_sample() + (
        graph.h_axis.macs_per_sample() if graph.kind == "2d" else 0
    )
    wpt = samples * per_sample
    encoder = copy.deepcopy(graph.encoder).to("meta")
    enc = _matmul_macs(encoder, torch.zeros(graph.wavelet_shape(), device="meta"))
    pixels = b * math.prod(graph.input_shape[2:])
    return {
        "wpt": wpt / pixels,
        "encoder": enc / pixels,
        "total": (wpt + enc) / pixels,
        "wpt_macs": float(wpt),
        "encoder_macs": float(enc),
        "pixels": float(pixels),
    }


def _parse_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"shape must be comma-separated integers, got {text!r}") from None
    if len(shape) not in (3, 4) or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must be B,C,H,W (2-D) or B,C,L (1-D), got {text!r}")
    return shape


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.codec.export",
        description="Export a codec's encoder side (WPT + encoder + quantizer -> int8 latents) for one "
        "fixed input shape, for sensors and phones that only encode.",
    )
    parser.add_argument(
        "--codec", required=True, help="bundled codec name or checkpoint path (pipeline.codec.load)"
    )
    parser.add_argument(
        "--shape",
        required=True,
        type=_parse_shape,
        help="input shape: B,C,H,W (2-D) or B,C,L (1-D), e.g. 1,3,256,256",
    )
    parser.add_argument("--format", required=True, choices=FORMATS, help="onnx or torchscript")
    parser.add_argument("--out", required=True, type=Path, help="output file (.onnx / .pt)")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    parser.add_argument(
        "--levels-per-stage",
        type=int,
        default=None,
        choices=range(1, wavelets.MAX_LEVELS_PER_STAGE + 1),
        help="packet levels fused per convolution: 1 gives the fewest MACs, 3 fewer, larger ops "
        "(default: the library's plan, up to 3; fastest in onnxruntime on CPU)",
    )
    parser.add_argument(
        "--trust-pickle", action="store_true", help="allow loading pickled reference .pth files"
    )
    args = parser.parse_args(argv)

    codec = load(args.codec, trust_pickle=args.trust_pickle).eval()
    try:
        if args.format == "onnx":
            path = export_onnx(
                codec, args.shape, args.out, opset=args.opset, levels_per_stage=args.levels_per_stage
            )
        else:
            path = export_torchscript(codec, args.shape, args.out, levels_per_stage=args.levels_per_stage)
    except ValueError as e:
        parser.error(str(e))
    macs = encoder_macs_per_pixel(codec, args.shape, levels_per_stage=args.levels_per_stage)
    print(f"wrote {path} ({path.stat().st_size} bytes, {args.format})")
    print(
        f"MACs per pixel: wpt {macs['wpt']:.1f}, encoder {macs['encoder']:.1f}, total {macs['total']:.1f} "
        f"(input {'x'.join(map(str, args.shape))})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
