"""Wavelet packet transform (bior4.4, periodization) as fused block-circulant matrix products.

WaLLoC's first stage is a J-level *full* wavelet packet transform: every band is split again at
every level, so C x H x W becomes C*4^J x H/2^J x W/2^J (1-D: C x L -> C*2^J x L/2^J). The
reference (walloc 1.2.1) runs pytorch_wavelets one level at a time, which is where nearly all of
its encode time goes.

Here the transform is linear, separable and shift-invariant by blocks of 2^j samples, so j levels
along one axis are one block-circulant matrix: output block i (2^j bands at position i) is
sum_k A_k @ x[block i + k]. We fuse up to three levels into one such operator ("stage") and apply
it as a batch of dense tile GEMMs over overlapping row windows, with the signal axis as the GEMM's
rows and everything else (other axis, batch, channels) as its columns. Kernels are derived once,
in float64, by probing the exact one-level periodization transform with unit impulses; ptwt's
'periodic' mode holds the periodization coefficients as the crop [2 : 2 + N/2], so ptwt is what
defines the filters and their alignment (see README, "Wavelet transform").

Layouts match the reference exactly: 2-D band index per level f = 2*s + r (r: the bit of the
vertical/H axis, s: of the horizontal/W axis), channel = c*4^J + sum_k f_k*4^(J-k); 1-D:
channel = c*2^J + sum_k b_k*2^(J-k).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import ptwt
import pywt
import torch
from torch import Tensor

WAVELET = "bior4.4"
MAX_LEVELS_PER_STAGE = 3  # 3 fused levels: 64 taps per sample; more levels cost more than a 2nd stage
TILE_BLOCKS = 8  # output blocks per GEMM tile: trades zero-padding FLOPs for GEMM efficiency
CHUNK_BYTES = 3 << 20  # transform the batch in cache-sized chunks: this machine is memory-bound


def _level1_periodization(x: Tensor) -> Tensor:
    """One periodization DWT level along the last axis: (..., N) -> (..., 2, N/2) float64."""
    n = x.shape[-1]
    approx, detail = ptwt.wavedec(x, pywt.Wavelet(WAVELET), level=1, mode="periodic")
    return torch.stack([approx[..., 2 : 2 + n // 2], detail[..., 2 : 2 + n // 2]], dim=-2)


def _packet_matrix(n: int, levels: int) -> np.ndarray:
    """Dense (n x n) matrix of a `levels`-level 1-D packet transform; rows ordered (band, position)."""
    x = torch.eye(n, dtype=torch.float64).unsqueeze(1)  # (probe, bands=1, n)
    for _ in range(levels):
        x = _level1_periodization(x).flatten(1, 2)  # (probe, bands*2, n/2)
    return x.reshape(n, n).T.numpy()


@dataclass(frozen=True)
class BlockCirculant:
    """A linear map on block sequences: out_block[i] = sum_k taps[k] @ in_block[i + first + k] (cyclic)."""

    taps: np.ndarray  # (K, P, P) float64
    first: int  # offset of taps[0] relative to the output block

    @property
    def block(self) -> int:
        return self.taps.shape[1]

    @classmethod
    def from_matrix(cls, m: np.ndarray, block: int) -> BlockCirculant:
        """Extract taps from a dense block-circulant matrix (position-major rows and columns)."""
        nb = m.shape[0] // block
        blocks = m.reshape(nb, block, nb, block).transpose(0, 2, 1, 3)  # (i, j, P, P)
        centre = nb // 2
        offsets = [j - centre for j in range(nb) if np.abs(blocks[centre, j]).max() > 1e-13]
        first, last = min(offsets), max(offsets)
        if last - first + 1 > nb // 2:
            raise ValueError("probe too short for the operator's support")
        taps = np.stack([blocks[centre, centre + k] for k in range(first, last + 1)])
        op = cls(taps=taps, first=first)
        if not np.allclose(op.dense(nb), m, atol=1e-12):
            raise AssertionError("operator is not block-circulant")
        return op

    def dense(self, nb: int) -> np.ndarray:
        """The (nb*P x nb*P) matrix of this operator on nb blocks, wrapping taps cyclically."""
        p = self.block
        out = np.zeros((nb, p, nb, p))
        for i in range(nb):
            for k, tap in enumerate(self.taps):
                out[i, :, (i + self.first + k) % nb, :] += tap
        return out.reshape(nb * p, nb * p)

    def tile(self, m: int) -> np.ndarray:
        """GEMM tile: m output blocks from a window of m + K - 1 input blocks."""
        k, p = self.taps.shape[0], self.block
        t = np.zeros((m, p, m + k - 1, p))
        for i in range(m):
            t[i, :, i : i + k, :] = self.taps.transpose(1, 0, 2)
        return t.reshape(m * p, (m + k - 1) * p)


@dataclass(frozen=True)
class Stage:
    """`levels` fused packet levels along one axis: analysis and its exact inverse."""

    levels: int
    analysis: BlockCirculant  # samples -> (position, band)
    synthesis: BlockCirculant  # (position, band) -> samples


@functools.cache
def stage(levels: int) -> Stage:
    """Derive the fused operators for `levels` levels (cached; float64, exact to ~1e-15)."""
    p = 2**levels
    nb = 32  # probe length in blocks: several times the support of any stage we build
    t = _packet_matrix(p * nb, levels)  # rows (band, position)
    rows = np.arange(p * nb).reshape(p, nb).T.reshape(-1)  # position-major order of rows
    analysis = t[rows]
    synthesis = np.linalg.inv(analysis)  # columns already position-major
    return Stage(
        levels=levels,
        analysis=BlockCirculant.from_matrix(analysis, p),
        synthesis=BlockCirculant.from_matrix(synthesis, p),
    )


def plan_stages(levels: int) -> tuple[int, ...]:
    """Split J levels into fused stages of at most MAX_LEVELS_PER_STAGE, as even as possible."""
    if levels < 1:
        raise ValueError(f"J must be >= 1, got {levels}")
    n = math.ceil(levels / MAX_LEVELS_PER_STAGE)
    base, extra = divmod(levels, n)
    return tuple(base + (1 if i < extra else 0) for i in range(n))


@functools.cache
def _tile_tensor(levels: int, inverse: bool, m: int, dtype: torch.dtype, device: str) -> Tensor:
    op = stage(levels).synthesis if inverse else stage(levels).analysis
    return torch.from_numpy(op.tile(m)).to(dtype=dtype, device=device)


def _apply_rows(x: Tensor, levels: int, inverse: bool) -> Tensor:
    """Apply one stage along dim 0 of a matrix (N, M) whose rows are position-major blocks."""
    st = stage(levels)
    op = st.synthesis if inverse else st.analysis
    n, cols = x.shape
    p, k = op.block, op.taps.shape[0]
    m = min(TILE_BLOCKS, n // p)
    tiles = -(-(n // p) // m)
    window = (m + k - 1) * p
    rows = torch.arange(op.first * p, (tiles * m + op.first + k - 1) * p, device=x.device) % n
    padded = x.index_select(0, rows)  # cyclic extension; wraps as often as a short signal needs
    windows = padded.as_strided((tiles, window, cols), (m * p * cols, cols, 1))
    tile = _tile_tensor(levels, inverse, m, x.dtype, str(x.device))
    return torch.matmul(tile, windows).reshape(tiles * m * p, cols)[:n]


def packet_rows(x: Tensor, levels: int) -> Tensor:
    """Packet analysis along dim 0 of (N, M); result (N/2^J, P_S * ... * P_1 * M) in memory order."""
    for lv in plan_stages(levels):
        n = x.shape[0]
        x = _apply_rows(x, lv, inverse=False).reshape(n >> lv, -1)  # a stage's bands join the columns
    return x


def inverse_packet_rows(x: Tensor, levels: int) -> Tensor:
    """Exact inverse of packet_rows."""
    for lv in reversed(plan_stages(levels)):
        n = x.shape[0]
        x = _apply_rows(x.reshape(n << lv, -1), lv, inverse=True)
    return x


def _band_dims_levels(levels: int) -> list[int]:
    """Level (1-based) of each size-2 band dim that packet_rows leaves, outermost first."""
    out: list[int] = []
    start = 0
    per_stage = []
    for lv in plan_stages(levels):
        per_stage.append(list(range(start + 1, start + lv + 1)))
        start += lv
    for levels_of_stage in reversed(per_stage):  # the last stage's bands sit outermost
        out.extend(levels_of_stage)
    return out


def _chunked(fn, x: Tensor, out_shape: tuple[int, ...]) -> Tensor:
    """Run fn(chunk, out_chunk) over batch chunks that fit in cache, writing into one output.

    The transform is memory-bound on CPUs: cache-sized chunks and one preallocated output (no
    torch.cat of large pieces, which pays page faults on fresh memory) make it several times faster.
    """
    out = x.new_empty(out_shape)
    per_item = x[0].numel() * x.element_size()
    size = max(1, CHUNK_BYTES // max(per_item, 1))
    for start in range(0, x.shape[0], size):
        fn(x[start : start + size], out[start : start + size])
    return out


def _check_divisible(length: int, levels: int, what: str) -> None:
    if length % (1 << levels):
        raise ValueError(
            f"{what} = {length} is not divisible by 2^J = {1 << levels}; pad the input first "
            "(codec.encode pads and decode crops for you)"
        )


def analysis_1d(x: Tensor, levels: int) -> Tensor:
    """(B, C, L) -> (B, C*2^J, L/2^J), the reference's layout."""
    b, c, length = x.shape
    _check_divisible(length, levels, "length")

    order = _band_dims_levels(levels)
    perm = [levels + 1, levels + 2] + [1 + order.index(k) for k in range(1, levels + 1)] + [0]

    def run(x: Tensor, out: Tensor) -> None:
        b = x.shape[0]
        y = packet_rows(x.permute(2, 0, 1).reshape(length, b * c), levels)
        y = y.reshape(length >> levels, *[2] * levels, b, c)
        out.view(b, c, *[2] * levels, length >> levels).copy_(y.permute(perm))

    return _chunked(run, x, (b, c << levels, length >> levels))


def synthesis_1d(x: Tensor, levels: int) -> Tensor:
    """Inverse of analysis_1d: (B, C*2^J, L/2^J) -> (B, C, L)."""
    b, cb, n = x.shape
    c = cb >> levels
    if c << levels != cb:
        raise ValueError(f"{cb} channels is not a multiple of 2^J = {1 << levels}")

    order = _band_dims_levels(levels)
    perm = [levels + 2] + [2 + (k - 1) for k in order] + [0, 1]

    def run(x: Tensor, out: Tensor) -> None:
        b = x.shape[0]
        y = x.reshape(b, c, *[2] * levels, n).permute(perm).reshape(n, -1)
        y = inverse_packet_rows(y, levels)
        out.copy_(y.reshape(n << levels, b, c).permute(1, 2, 0))

    return _chunked(run, x, (b, c, n << levels))


def analysis_2d(x: Tensor, levels: int) -> Tensor:
    """(B, C, H, W) -> (B, C*4^J, H/2^J, W/2^J), the reference's layout."""
    _, c, h, w = x.shape
    _check_divisible(h, levels, "height")
    _check_divisible(w, levels, "width")
    nh, nw = h >> levels, w >> levels

    order = _band_dims_levels(levels)
    s_dim = {k: 1 + i for i, k in enumerate(order)}
    r_dim = {k: levels + 2 + i for i, k in enumerate(order)}
    perm = [2 * levels + 2, 2 * levels + 3]
    for k in range(1, levels + 1):
        perm += [s_dim[k], r_dim[k]]  # f_k = 2*s_k + r_k
    perm += [levels + 1, 0]

    def run(x: Tensor, out: Tensor) -> None:
        b = x.shape[0]
        y = packet_rows(x.permute(2, 3, 0, 1).reshape(h, w * b * c), levels)  # (nh, r.., W, B, C)
        y = y.reshape(h, w, b * c).transpose(0, 1).reshape(w, h * b * c)
        y = packet_rows(y, levels)  # (nw, s.., nh, r.., B, C)
        y = y.reshape(nw, *[2] * levels, nh, *[2] * levels, b, c)
        out.view(b, c, *[2] * (2 * levels), nh, nw).copy_(y.permute(perm))

    return _chunked(run, x, (x.shape[0], c << (2 * levels), nh, nw))


def synthesis_2d(x: Tensor, levels: int) -> Tensor:
    """Inverse of analysis_2d: (B, C*4^J, H/2^J, W/2^J) -> (B, C, H, W)."""
    _, cb, nh, nw = x.shape
    c = cb >> (2 * levels)
    if c << (2 * levels) != cb:
        raise ValueError(f"{cb} channels is not a multiple of 4^J = {1 << 2 * levels}")
    h, w = nh << levels, nw << levels

    order = _band_dims_levels(levels)
    s_dims = [2 + 2 * (k - 1) for k in order]
    r_dims = [3 + 2 * (k - 1) for k in order]
    perm = [2 * levels + 3, *s_dims, 2 * levels + 2, *r_dims, 0, 1]

    def run(x: Tensor, out: Tensor) -> None:
        b = x.shape[0]
        y = x.reshape(b, c, *[2] * (2 * levels), nh, nw)  # (B, C, s1, r1, ..., sJ, rJ, nh, nw)
        y = y.permute(perm).reshape(nw, -1)
        y = inverse_packet_rows(y, levels)  # (W, nh*r.., B, C)
        y = y.reshape(w, h, b * c).transpose(0, 1).reshape(nh, -1)
        y = inverse_packet_rows(y, levels)  # (H, W, B, C)
        out.copy_(y.reshape(h, w, b, c).permute(2, 3, 0, 1))

    return _chunked(run, x, (x.shape[0], c, h, w))
