"""Wavelet packet transform (bior4.4, periodization) as fused block-circulant matrix products.

WaLLoC's first stage is a J-level *full* wavelet packet transform: every band is split again at
every level, so C x H x W becomes C*4^J x H/2^J x W/2^J (1-D: C x L -> C*2^J x L/2^J). The
reference (walloc 1.2.1) runs pytorch_wavelets one level at a time, which is where nearly all of
its encode time goes.

Here the transform is linear, separable and shift-invariant by blocks of 2^j samples, so j levels
along one axis are one block-circulant matrix: output block i (2^j bands at position i) is
sum_k A_k @ x[block i + k]. We fuse up to three levels into one such operator ("stage") and apply
it as a batch of dense tile GEMMs: a tile maps a window of m + K - 1 input blocks to m output
blocks, and consecutive windows overlap, so they are strided *views* of the (cyclically extended)
signal, never copies. Kernels are derived once, in float64, by probing the exact one-level
periodization transform with unit impulses; ptwt's 'periodic' mode holds the periodization
coefficients as the crop [2 : 2 + N/2], so ptwt is what defines the filters and their alignment
(see README, "Wavelet transform").

Where the signal axis sits decides the GEMM's form (all are plain BLAS calls on strided views):
    rows      the axis is dim 0 of a (N, M) matrix: windows are row ranges, output (tiles, mP, M)
    last      the axis is the contiguous last dim of (M, N): windows are column ranges of every row
              (the GEMM's K dimension), output (tiles, mP, M) or, transposed, (tiles, M, mP)
On CPUs the transform is bound by memory traffic as much as by FLOPs, and the expensive memory
operations are transposes (copies that change the innermost dimension): a transpose of a tensor
costs about as much as a tile GEMM over it. The 2-D analysis therefore runs the W axis in "last"
form straight off the natural (C, H, W) layout (which leaves H innermost) and then the H axis in
"last" form too, one image at a time so that everything stays in cache; `analysis_2d_linear`
(the codec's 1x1 encoder) consumes that result directly with a permuted weight, so encoding moves
no data except two cheap cyclic extensions. The reference layout (positions innermost) needs one
transpose at the end (`analysis_2d`), as synthesis does at both ends. 1-D signals are cut into
segments stacked as GEMM columns (halos are exchanged between neighbouring segments), so that
long mono/stereo signals still give the GEMMs enough columns. On CPUs the images (clips) of a batch
are spread over torch.get_num_threads() single-threaded workers (`batch_parallel`); on other
devices each function is a few whole-batch kernels instead.

Layouts match the reference exactly: 2-D band index per level f = 2*s + r (r: the bit of the
vertical/H axis, s: of the horizontal/W axis), channel = c*4^J + sum_k f_k*4^(J-k); 1-D:
channel = c*2^J + sum_k b_k*2^(J-k). Within a stage the first level is the most significant bit.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import ptwt
import pywt
import torch
from torch import Tensor

WAVELET = "bior4.4"
MAX_LEVELS_PER_STAGE = 3  # 3 fused levels: 64 taps per sample; more levels cost more than a 2nd stage
# Output blocks per GEMM tile, by levels per stage: bigger tiles waste FLOPs on the zero corners of
# the banded tile (a tile does (m + K - 1) * P MACs per sample, against K * P for the operator), and
# smaller ones make GEMMs too thin (3 levels: m=2 beats m=8 by ~25%, m=1 by ~10%; AVX-512 EPYC).
TILE_BLOCKS = {1: 4, 2: 4, 3: 2}
MIN_TRANSPOSED_TILE = 16  # a GEMM writing its tile rows innermost wants at least this many of them
CHUNK_BYTES = 3 << 20  # 1-D: short signals are transformed this many bytes at a time
IMAGE_CHUNK_BYTES = 1 << 20  # 2-D: images per W-pass chunk (one 256x256 RGB image: L2-sized)
_PER_IMAGE_DEVICES = ("cpu",)  # device types that transform image by image (tests clear it)
SEGMENT_SAMPLES = 8192  # 1-D: signals are cut into segments of about this length (GEMM columns)
ITEM_PARALLEL = True  # CPU: spread the images / clips of a batch over single-threaded workers


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


# --- batch parallelism on CPUs ------------------------------------------------------------------
#
# The per-image GEMMs are small, and splitting each across cores (MKL's threads) pays a barrier per
# call and shares every image's working set between the cores' L2 caches. So on CPUs the images of
# a batch are spread over torch.get_num_threads() workers that each run single-threaded: OpenMP's
# and MKL's thread counts are per calling thread, so a worker that sets 1 leaves the caller's alone.

_workers: ThreadPoolExecutor | None = None
_worker_count = 0
_worker_lock = threading.Lock()
_in_worker = threading.local()


def _init_worker(barrier: threading.Barrier) -> None:
    # ATen initialises a thread's OpenMP / MKL thread counts lazily, on first use, from the global
    # default: trigger that first, or it would later undo the 1 set here (and oversubscribe)
    torch.get_num_threads()
    torch.set_num_threads(1)  # this thread's OpenMP team and MKL threads
    _in_worker.active = True
    barrier.wait(timeout=60)  # every worker thread is created and initialised before any work


def _forget_workers() -> None:
    """After fork: the child has none of the parent's threads."""
    global _workers, _worker_count, _worker_lock
    _workers, _worker_count, _worker_lock = None, 0, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def _worker_pool(n: int) -> ThreadPoolExecutor:
    global _workers, _worker_count
    with _worker_lock:
        if _workers is None or _worker_count != n:
            if _workers is not None:
                _workers.shutdown(wait=True)
            pool = ThreadPoolExecutor(n, thread_name_prefix="wavelets")
            barrier = threading.Barrier(n)
            for f in [pool.submit(_init_worker, barrier) for _ in range(n)]:
                f.result()
            torch.set_num_threads(n)  # set_num_threads is also the default for new threads: restore it
            _workers, _worker_count = pool, n
        return _workers


def batch_parallel(x: Tensor, fn: Callable[[int, int], None]) -> None:
    """fn(start, stop) over ranges of x's batch: split across CPU workers, or all at once.

    On CPUs with torch.get_num_threads() > 1 each worker takes a contiguous range and runs single
    threaded (fn must write disjoint outputs); nested calls, other devices and autograd run fn(0, B).
    Callers should do all the parallel work of a batch inside fn: an OpenMP parallel region in the
    calling thread leaves its team spinning for a few ms, which steals a core from the workers.
    """
    count, n = x.shape[0], torch.get_num_threads()
    serial = not ITEM_PARALLEL or x.device.type != "cpu" or min(n, count) < 2
    if serial or _needs_grad(x) or getattr(_in_worker, "active", False):  # autograd records serially
        fn(0, count)
        return
    n = min(n, count)
    pool = _worker_pool(torch.get_num_threads())
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()

    def task(start: int, stop: int) -> None:
        with torch.inference_mode(inference), torch.set_grad_enabled(grad):  # both are per thread
            fn(start, stop)

    bounds = [count * i // n for i in range(n + 1)]
    futures = [pool.submit(task, bounds[i], bounds[i + 1]) for i in range(n)]
    concurrent.futures.wait(futures)  # all done (writing into the caller's tensors) before raising
    for f in futures:
        f.result()


# --- one stage along one axis -------------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """How a stage tiles an axis of n samples: tiles of m blocks read windows of `win` samples.

    Tile t reads samples [t*m*P - left, t*m*P - left + win) of the cyclically extended axis. The
    window is the tile's support: the columns of the (m*P x (m+K-1)*P) tile that are zero for every
    output row are cut off (bior4.4's composite filters are shorter than K*P: about 10% fewer MACs).
    """

    p: int  # block (2^levels)
    nb: int  # blocks on the axis
    m: int  # output blocks per tile
    tiles: int
    win: int  # input samples per tile window
    left: int  # samples the cyclic extension adds before the axis
    total: int  # extended length: (tiles - 1) * m * P + win


@functools.cache
def _support(levels: int, inverse: bool, m: int) -> tuple[int, int]:
    """First and one-past-last nonzero column of the tile."""
    op = stage(levels).synthesis if inverse else stage(levels).analysis
    mags = np.abs(op.tile(m)).max(axis=0)
    cols = np.flatnonzero(mags > 1e-12 * mags.max())  # the inverse's taps hold ~1e-17 round-off
    return int(cols[0]), int(cols[-1]) + 1


@functools.cache
def _geometry(levels: int, inverse: bool, n: int, transposed: bool) -> _Geometry:
    op = stage(levels).synthesis if inverse else stage(levels).analysis
    p = op.block
    nb = n // p
    m = TILE_BLOCKS.get(levels, 2)
    if transposed:
        m = max(m, -(-MIN_TRANSPOSED_TILE // p))
    m = max(1, min(m, nb))
    tiles = -(-nb // m)
    lo, hi = _support(levels, inverse, m)
    left = -op.first * p - lo
    if left < 0:  # not for bior4.4; would need a negative extension
        lo, left = -op.first * p, 0
    return _Geometry(p, nb, m, tiles, hi - lo, left, (tiles - 1) * m * p + hi - lo)


@functools.cache
def _tile_tensor(levels: int, inverse: bool, m: int, dtype: torch.dtype, device: str) -> Tensor:
    """The GEMM tile, cut to its support (see _Geometry)."""
    op = stage(levels).synthesis if inverse else stage(levels).analysis
    lo, hi = _support(levels, inverse, m)
    lo = min(lo, -op.first * op.block)
    return torch.from_numpy(np.ascontiguousarray(op.tile(m)[:, lo:hi])).to(dtype=dtype, device=device)


@functools.cache
def _wrap_index(n: int, left: int, total: int, device: str) -> Tensor:
    return (torch.arange(total, device=device) - left) % n


def _extend(x: Tensor, dim: int, left: int, total: int, roll_dim: int | None = None) -> Tensor:
    """Cyclic extension along `dim` to `total` samples, `left` of them before the original ones.

    With roll_dim, x holds consecutive segments of longer signals along roll_dim: the samples
    before (after) a segment come from the previous (next) segment, cyclically per signal.
    """
    n = x.shape[dim]
    right = total - left - n
    segmented = roll_dim is not None and x.shape[roll_dim] > 1
    if 0 <= left <= n and -n < right <= n:
        head = x.narrow(dim, n - left, left)
        head = head.roll(1, roll_dim) if segmented else head
        if right < 0:  # the last window ends before the axis does
            return torch.cat([head, x.narrow(dim, 0, n + right)], dim=dim)
        tail = x.narrow(dim, 0, right)
        tail = tail.roll(-1, roll_dim) if segmented else tail
        return torch.cat([head, x, tail], dim=dim)
    if segmented:
        raise AssertionError("segments shorter than the operator's support")
    return x.index_select(dim, _wrap_index(n, left, total, str(x.device)))  # wraps several times


def _along_last(x: Tensor, levels: int, inverse: bool, transposed: bool) -> Tensor:
    """One stage along the last axis of x (..., N): (tiles, m*P, M), or (tiles, M, m*P) transposed.

    M is the product of x's other dims (x may be any strided view: the cyclic extension copies it).
    The result's first nb blocks are the transform (tiles * m may exceed nb; the caller crops).
    """
    n = x.shape[-1]
    g = _geometry(levels, inverse, n, transposed)
    ext = _extend(x, x.dim() - 1, g.left, g.total).reshape(-1, g.total)  # cat keeps channels-last
    rows = ext.shape[0]
    windows = ext.as_strided((g.tiles, rows, g.win), (g.m * g.p, g.total, 1))
    tile = _tile_tensor(levels, inverse, g.m, x.dtype, str(x.device))
    if transposed:
        return torch.matmul(windows, tile.t())
    return torch.matmul(tile, windows.transpose(1, 2))


def _along_rows(
    x: Tensor, levels: int, inverse: bool, transposed: bool, roll_dim: int | None = None
) -> Tensor:
    """One stage along dim 0 of x (N, *cols): (tiles, m*P, cols), or (tiles, cols, m*P) transposed."""
    n = x.shape[0]
    g = _geometry(levels, inverse, n, transposed)
    ext = _extend(x, 0, g.left, g.total, roll_dim).reshape(g.total, -1)
    cols = ext.shape[1]
    windows = ext.as_strided((g.tiles, g.win, cols), (g.m * g.p * cols, cols, 1))
    tile = _tile_tensor(levels, inverse, g.m, x.dtype, str(x.device))
    if transposed:
        return torch.matmul(windows.transpose(1, 2), tile.t())
    return torch.matmul(tile, windows)


def _rows_stage(x: Tensor, levels: int, inverse: bool, roll_dim: int | None = None) -> Tensor:
    """Stage along dim 0 of (N, *cols), result (N', P', *cols) cropped: analysis N/P, P; inverse N*P, 1."""
    n = x.shape[0]
    p = 1 << levels
    out = _along_rows(x, levels, inverse, False, roll_dim)
    if inverse:  # rows are (position, band) pairs: N = positions * P in, samples out
        return out.reshape(-1, *x.shape[1:])[:n]
    return out.reshape(-1, p, *x.shape[1:])[: n // p]


def packet_rows(x: Tensor, levels: int) -> Tensor:
    """Packet analysis along dim 0 of (N, M); result (N/2^J, P_S * ... * P_1 * M) in memory order."""
    for lv in plan_stages(levels):
        x = _rows_stage(x, lv, inverse=False).reshape(x.shape[0] >> lv, -1)
    return x


def inverse_packet_rows(x: Tensor, levels: int) -> Tensor:
    """Exact inverse of packet_rows."""
    for lv in reversed(plan_stages(levels)):
        n = x.shape[0]
        x = _rows_stage(x.reshape(n << lv, -1), lv, inverse=True)
    return x


def _stage_levels(levels: int) -> list[list[int]]:
    """The levels (1-based) of each stage of plan_stages(levels), first stage first."""
    out, start = [], 0
    for lv in plan_stages(levels):
        out.append(list(range(start + 1, start + lv + 1)))
        start += lv
    return out


def _band_dims_levels(levels: int) -> list[int]:
    """Level of each size-2 band dim that packet_rows leaves, outermost first (last stage outermost)."""
    return [k for st in reversed(_stage_levels(levels)) for k in st]


def _check_divisible(length: int, levels: int, what: str) -> None:
    if length % (1 << levels):
        raise ValueError(
            f"{what} = {length} is not divisible by 2^J = {1 << levels}; pad the input first "
            "(codec.encode pads and decode crops for you)"
        )


# --- 2-D ----------------------------------------------------------------------------------------


def _w_pass(x: Tensor, levels: int) -> Tensor:
    """W-axis analysis of images (B, C, H, W) -> (nw, Sw, B, C, H), Sw = s bands (last stage outermost)."""
    b, c, h, w = x.shape
    plan = plan_stages(levels)
    y = _along_last(x, plan[0], False, False)  # (tiles, m*P, B*C*H)
    y = y.reshape(-1, b * c * h)[:w].reshape(w >> plan[0], -1)
    for lv in plan[1:]:
        y = _rows_stage(y, lv, False).reshape(y.shape[0] >> lv, -1)
    return y.reshape(w >> levels, -1, b, c, h)


def _h_pass(y: Tensor, levels: int, transposed_last: bool) -> Tensor:
    """H-axis analysis of one image's (nw, Sw, C, H) (H contiguous; any strides outside).

    transposed_last=False: (nh, Rh, nw, Sw, C) with Rh the r bands (last stage outermost).
    transposed_last=True: (tiles, Ro, nw, Sw, C, m, P_last) with nh = tile * m + m-index (cropped by
    the caller), Ro the r bands of all but the last stage, P_last those of the last stage.
    """
    h = y.shape[-1]
    rows = y.numel() // h
    plan = plan_stages(levels)
    if len(plan) == 1 and transposed_last:
        return _along_last(y, plan[0], False, True)  # (tiles, R, m*P)
    z = _along_last(y, plan[0], False, False).reshape(-1, rows)[:h]
    z = z.reshape(h >> plan[0], -1)
    last = plan[1:] if not transposed_last else plan[1:-1]
    for lv in last:
        z = _rows_stage(z, lv, False).reshape(z.shape[0] >> lv, -1)
    if transposed_last:
        return _along_rows(z, plan[-1], False, True)  # (tiles, Ro * R, m*P)
    return z


@functools.cache
def _reference_perm_2d(levels: int) -> tuple[list[int], list[int]]:
    """Dim orders for (nh, Rh digits, nw, Sw digits, B, C) <-> (B, C, s1 r1 ... sJ rJ, nh, nw)."""
    order = _band_dims_levels(levels)  # level of each band digit, memory order
    r_dim = {k: 1 + i for i, k in enumerate(order)}
    s_dim = {k: levels + 2 + i for i, k in enumerate(order)}
    to_ref = [2 * levels + 2, 2 * levels + 3]
    for k in range(1, levels + 1):
        to_ref += [s_dim[k], r_dim[k]]
    to_ref += [0, levels + 1]
    from_ref = [to_ref.index(i) for i in range(len(to_ref))]
    return to_ref, from_ref


def _needs_grad(*tensors: Tensor | None) -> bool:
    """The fused encoders write into preallocated outputs, which autograd cannot follow."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def _whole_batch(x: Tensor) -> bool:
    """Accelerators get few, large kernels: per-image cache blocking is for CPUs."""
    return x.device.type not in _PER_IMAGE_DEVICES


def _images_per_chunk(x: Tensor) -> int:
    """Images transformed together: what fits in a core's L2 on CPUs, everything on accelerators."""
    if _whole_batch(x):
        return max(1, x.shape[0])
    return max(1, IMAGE_CHUNK_BYTES // max(x[0].numel() * x.element_size(), 1))


def analysis_2d(x: Tensor, levels: int) -> Tensor:
    """(B, C, H, W) -> (B, C*4^J, H/2^J, W/2^J), the reference's layout."""
    b, c, h, w = x.shape
    _check_divisible(h, levels, "height")
    _check_divisible(w, levels, "width")
    nh, nw = h >> levels, w >> levels
    to_ref, _ = _reference_perm_2d(levels)
    out = x.new_empty((b, c << (2 * levels), nh, nw))
    size = _images_per_chunk(x)

    def run(first: int, stop: int) -> None:
        for start in range(first, stop, size):
            y = _w_pass(x[start : min(start + size, stop)], levels)  # (nw, Sw, B, C, H)
            k = y.shape[2]
            y = _h_pass(y, levels, transposed_last=False)  # (nh, Rh, nw, Sw, B, C)
            y = y.reshape(nh, *[2] * levels, nw, *[2] * levels, k, c).permute(to_ref)
            out[start : start + k].view(k, c, *[2] * (2 * levels), nh, nw).copy_(y)  # the one transpose

    batch_parallel(x, run)
    return out


@functools.cache
def _reference_channels_2d(levels: int, channels: int) -> Tensor:
    """Reference channel of each entry of the fused layout (Ro, Sw, C, P_last), flattened."""
    stages = _stage_levels(levels)
    r_outer = [k for st in reversed(stages[:-1]) for k in st]
    s_all = [k for st in reversed(stages) for k in st]
    r_last = stages[-1]
    dims = [2] * len(r_outer) + [2] * len(s_all) + [channels] + [2] * len(r_last)
    grid = np.indices(dims).reshape(len(dims), -1)
    pos = len(r_outer) + len(s_all)
    ch = grid[pos] * 4**levels
    for i, k in enumerate(r_outer):
        ch = ch + grid[i] * 4 ** (levels - k)
    for i, k in enumerate(s_all):
        ch = ch + grid[len(r_outer) + i] * 2 * 4 ** (levels - k)
    for i, k in enumerate(r_last):
        ch = ch + grid[pos + 1 + i] * 4 ** (levels - k)
    return torch.from_numpy(ch)


def analysis_2d_linear(x: Tensor, levels: int, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1x1 convolution of analysis_2d(x): (B, C, H, W) -> (B, out, H/2^J, W/2^J).

    weight (out, C*4^J[, 1, 1]) and bias (out,) in the reference's channel order, as in the codec's
    lightweight encoder. The transform never takes the reference layout: the last H stage writes
    its bands innermost, next to the W bands and channels, and the weight is permuted (and made
    block diagonal over the tile's m positions) to match, so the whole encoder is one more GEMM.
    """
    b, c, h, w = x.shape
    _check_divisible(h, levels, "height")
    _check_divisible(w, levels, "width")
    nh, nw = h >> levels, w >> levels
    weight = weight.reshape(weight.shape[0], -1).to(dtype=x.dtype, device=x.device)
    out_ch = weight.shape[0]
    if weight.shape[1] != c << (2 * levels):
        raise ValueError(f"weight takes {weight.shape[1]} channels, the transform gives {c << 2 * levels}")
    if bias is not None:
        bias = bias.to(dtype=x.dtype, device=x.device)
    if _whole_batch(x) or _needs_grad(x, weight, bias):  # few large kernels; autograd (no out=)
        return torch.nn.functional.conv2d(analysis_2d(x, levels), weight[:, :, None, None], bias)
    plan = plan_stages(levels)
    p_last = 1 << plan[-1]
    g = _geometry(plan[-1], False, nh << plan[-1], True)  # the last H stage's tiling
    m, tiles = g.m, g.tiles
    r_outer = 1 << (levels - plan[-1])
    inner = (c << (2 * levels)) // (r_outer * p_last)  # Sw * C
    # weight -> (Ro, Sw*C, m', P_last, m, out) with a block diagonal over (m', m)
    wp = weight[:, _reference_channels_2d(levels, c).to(x.device)].view(out_ch, r_outer, inner, p_last)
    w2 = weight.new_zeros((r_outer, inner, m, p_last, m, out_ch))
    for a in range(m):
        w2[:, :, a, :, a, :] = wp.permute(1, 2, 3, 0)
    w2 = w2.view(r_outer, inner * m * p_last, m * out_ch)
    lat = x.new_empty((b, tiles, nw, m, out_ch))
    result = x.new_empty((b, out_ch, tiles, m, nw))
    size = _images_per_chunk(x)

    def run(first: int, stop: int) -> None:
        if len(plan) == 1:  # the hot path (J <= 3), inlined: per image that is 2 copies and 3 GEMMs
            flat = lat[first:stop].view(stop - first, tiles * nw, m * out_ch)
            _linear_one_stage(x[first:stop], levels, size, w2[0], flat)
        else:  # several stages: the earlier H stages' r bands (Ro) sit outside nw, one GEMM each
            for i in range(first, stop):
                if (i - first) % size == 0:
                    y_w = _w_pass(x[i : min(i + size, stop)], levels)  # (nw, Sw, B, C, H)
                z = _h_pass(y_w[:, :, (i - first) % size], levels, transposed_last=True)
                z = z.view(tiles, r_outer, nw, -1)  # (tiles, Ro, nw, Sw*C*m*P)
                dst = lat[i].view(tiles, nw, m * out_ch)
                torch.bmm(z[:, 0], w2[0].expand(tiles, -1, -1), out=dst)
                for r in range(1, r_outer):
                    dst.baddbmm_(z[:, r], w2[r].expand(tiles, -1, -1))
        src = lat[first:stop].permute(0, 4, 1, 3, 2)  # (B, out, tiles, m, nw)
        if bias is not None:
            torch.add(src, bias.view(1, -1, 1, 1, 1), out=result[first:stop])
        else:
            result[first:stop].copy_(src)

    batch_parallel(x, run)
    return result.view(b, out_ch, tiles * m, nw)[:, :, :nh]


def _linear_one_stage(x: Tensor, levels: int, size: int, weight: Tensor, lat: Tensor) -> None:
    """analysis_2d_linear's loop for a single stage per axis: _w_pass + _h_pass + the encoder GEMM.

    x (B, C, H, W); weight (Sw*C*m*P, m*out) as prepared there; lat (B, tiles*nw, m*out) is written.
    """
    b, c, h, w = x.shape
    dev = str(x.device)
    gw, gh = _geometry(levels, False, w, False), _geometry(levels, False, h, True)
    tile_w = _tile_tensor(levels, False, gw.m, x.dtype, dev)
    tile_h = _tile_tensor(levels, False, gh.m, x.dtype, dev).t()
    rows_h = (w >> levels) * (1 << levels) * c  # (nw, S, C)
    for start in range(0, b, size):
        chunk = x[start : start + size]
        k = chunk.shape[0]
        ext = _extend(chunk, 3, gw.left, gw.total).reshape(k * c * h, gw.total)
        windows = ext.as_strided((gw.tiles, k * c * h, gw.win), (gw.m * gw.p, gw.total, 1))
        y = torch.matmul(tile_w, windows.transpose(1, 2))  # (tiles, m*P, B*C*H)
        y = y.view(-1, k, c * h)[:w].view(rows_h // c, k, c, h)  # (nw*S, B, C, H)
        for i in range(k):
            ext = _extend(y[:, i], 2, gh.left, gh.total).reshape(rows_h, gh.total)
            windows = ext.as_strided((gh.tiles, rows_h, gh.win), (gh.m * gh.p, gh.total, 1))
            z = torch.matmul(windows, tile_h)  # (tiles, nw*S*C, m*P)
            torch.mm(z.view(lat.shape[1], -1), weight, out=lat[start + i])


@functools.cache
def _deinterleave_perm_2d(levels: int) -> list[int]:
    """(B, C, s1 r1 ... sJ rJ, nh, nw) -> (Rh digits, B, C, Sw digits, nh, nw), digits in packet order."""
    order = _band_dims_levels(levels)
    return (
        [3 + 2 * (k - 1) for k in order]
        + [0, 1]
        + [2 + 2 * (k - 1) for k in order]
        + [2 + 2 * levels, 3 + 2 * levels]
    )


def synthesis_2d(x: Tensor, levels: int) -> Tensor:
    """Inverse of analysis_2d: (B, C*4^J, H/2^J, W/2^J) -> (B, C, H, W).

    The bands go to (nh, Rh, B, C, nw, Sw) in two copies (the first separates the r and s digits
    with whole (nh, nw) planes; a single permute with 2-element inner dims is ~10x slower). The
    inverse H stages then run along the rows. One stage along W runs on the contiguous (nw, S) pairs
    and writes (tiles, H*B*C, m*P), a cheap copy from (B, C, H, W); several stages along W run on
    rows after a transpose (and the result is transposed back).
    """
    b, cb, nh, nw = x.shape
    c = cb >> (2 * levels)
    if c << (2 * levels) != cb:
        raise ValueError(f"{cb} channels is not a multiple of 4^J = {1 << 2 * levels}")
    h, w, bands = nh << levels, nw << levels, 1 << levels
    out = x.new_empty((b, c, h, w))
    size = _images_per_chunk(x)
    single = len(plan_stages(levels)) == 1

    def run(first: int, stop: int) -> None:
        for start in range(first, stop, size):
            chunk = x[start : min(start + size, stop)]
            k = chunk.shape[0]
            y = chunk.reshape(k, c, *[2] * (2 * levels), nh, nw).permute(_deinterleave_perm_2d(levels))
            y = y.reshape(bands, k, c, bands, nh, nw).permute(4, 0, 1, 2, 5, 3)  # (nh, Rh, B, C, nw, Sw)
            y = inverse_packet_rows(y.reshape(nh, -1), levels).view(h, k * c, w)  # (H, B*C, nw*Sw)
            if single:
                z = _along_last(y, levels, True, True)  # (tiles, H*B*C, m*P): samples along W
                tiles, mp = z.shape[0], z.shape[2]
                z = z.view(tiles, h, k, c, mp).permute(2, 3, 1, 0, 4)
                if tiles * mp == w:
                    out[start : start + k].view(k, c, h, tiles, mp).copy_(z)
                else:
                    out[start : start + k].copy_(z.reshape(k, c, h, tiles * mp)[..., :w])
                continue
            y = y.view(h * k * c, w).t().reshape(nw, -1)  # (nw, Sw, H, B, C)
            y = inverse_packet_rows(y, levels)  # (W, H, B, C)
            out[start : start + k].copy_(y.view(w, h, k, c).permute(2, 3, 1, 0))

    batch_parallel(x, run)
    return out


# --- 1-D ----------------------------------------------------------------------------------------


def _segments(length: int, levels: int) -> int:
    """How many segments of at least SEGMENT_SAMPLES (and 32 positions) a signal is cut into."""
    n = length >> levels
    for d in range(n // max(32, SEGMENT_SAMPLES >> levels), 1, -1):
        if n % d == 0:
            return d
    return 1


def _items_per_chunk(per_item_bytes: int, count: int, nseg: int) -> int:
    """Items per 1-D chunk: one when the signal is segmented (its segments give the columns)."""
    if nseg > 1:
        return 1
    return max(1, min(count, CHUNK_BYTES // max(per_item_bytes, 1)))


def _packet_1d(x: Tensor, levels: int, nseg: int) -> Tensor:
    """Analysis of a chunk (B, C, L) -> (n_seg, Bands, C, B, nseg): rows are positions in a segment.

    Bands holds the band digits of the stages, last stage outermost; position = seg * n_seg + row.
    The GEMM columns are (C, B, nseg): C outside so that (Bands, C) is one stride for the encoder.
    """
    b, c, length = x.shape
    seg = length // nseg
    if b == 1:  # a plain 2-D transpose, which torch copies several times faster than a permute
        y = x.reshape(c * nseg, seg).t().contiguous().view(seg, c, 1, nseg)
    else:
        y = x.reshape(b, c, nseg, seg).permute(3, 1, 0, 2).contiguous()  # (S, C, B, nseg)
    for lv in plan_stages(levels):
        y = _rows_stage(y, lv, False, roll_dim=y.dim() - 1)  # (S/P, P, *cols)
    return y.reshape(seg >> levels, 1 << levels, c, b, nseg)


def analysis_1d(x: Tensor, levels: int) -> Tensor:
    """(B, C, L) -> (B, C*2^J, L/2^J), the reference's layout."""
    b, c, length = x.shape
    _check_divisible(length, levels, "length")
    n = length >> levels
    nseg = _segments(length, levels)
    n_seg = n // nseg
    order = _band_dims_levels(levels)
    # (n_seg, packet digits, C, B, nseg) -> (n_seg, B, C, reference digits, nseg), then a transpose
    perm = [0, levels + 2, levels + 1, *[1 + order.index(k) for k in range(1, levels + 1)], levels + 3]
    out = x.new_empty((b, c << levels, n))
    size = _items_per_chunk(c * length * x.element_size(), b, nseg)

    def run(first: int, stop: int) -> None:
        for start in range(first, stop, size):
            chunk = x[start : min(start + size, stop)]
            k = chunk.shape[0]
            y = _packet_1d(chunk, levels, nseg).reshape(n_seg, *[2] * levels, c, k, nseg).permute(perm)
            y = y.reshape(n_seg, -1)  # one copy: the digits and the batch move, nseg runs stay
            out[start : start + k].view(-1, n_seg).copy_(y.t())

    batch_parallel(x, run)
    return out


def analysis_1d_linear(x: Tensor, levels: int, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """A 1x1 convolution (no padding) of analysis_1d(x): (B, C, L) -> (B, out, L/2^J)."""
    b, c, length = x.shape
    _check_divisible(length, levels, "length")
    n = length >> levels
    nseg = _segments(length, levels)
    n_seg = n // nseg
    weight = weight.reshape(weight.shape[0], -1).to(dtype=x.dtype, device=x.device)
    out_ch = weight.shape[0]
    if weight.shape[1] != c << levels:
        raise ValueError(f"weight takes {weight.shape[1]} channels, the transform gives {c << levels}")
    if _needs_grad(x, weight, bias):
        return torch.nn.functional.conv1d(analysis_1d(x, levels), weight[:, :, None], bias)
    # reference channel c*2^J + band(reference digits) for each (digits in packet order, c)
    idx = torch.arange(c << levels).view(c, *[2] * levels)  # reference (c, level 1, ..., level J)
    idx = idx.permute(*_band_dims_levels(levels), 0).reshape(-1)
    wp = weight[:, idx.to(x.device)]  # (out, Bands*C) in the packet layout's order
    bias = None if bias is None else bias.to(dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    out = x.new_empty((b, out_ch, n))
    size = _items_per_chunk(c * length * x.element_size(), b, nseg)

    def run(first: int, stop: int) -> None:
        for start in range(first, stop, size):
            chunk = x[start : min(start + size, stop)]
            k = chunk.shape[0]
            y = _packet_1d(chunk, levels, nseg).reshape(n_seg, -1, k * nseg)  # (n_seg, Bands*C, B*nseg)
            lat = torch.matmul(wp, y)  # (n_seg, out, B*nseg)
            dst = out[start : start + k].view(k, out_ch, nseg, n_seg)
            src = lat.view(n_seg, out_ch, k, nseg).permute(2, 1, 3, 0)
            if bias is not None:
                torch.add(src, bias, out=dst)
            else:
                dst.copy_(src)

    batch_parallel(x, run)
    return out


def synthesis_1d(x: Tensor, levels: int) -> Tensor:
    """Inverse of analysis_1d: (B, C*2^J, L/2^J) -> (B, C, L)."""
    b, cb, n = x.shape
    c = cb >> levels
    if c << levels != cb:
        raise ValueError(f"{cb} channels is not a multiple of 2^J = {1 << levels}")
    length = n << levels
    nseg = _segments(length, levels)
    n_seg, seg = n // nseg, length // nseg
    order = _band_dims_levels(levels)
    # (n_seg, B, C, reference digits, nseg) -> (n_seg, packet digits, C, B, nseg)
    perm = [0, *[3 + (lv - 1) for lv in order], 2, 1, levels + 3]
    out = x.new_empty((b, c, length))
    size = _items_per_chunk(c * length * x.element_size(), b, nseg)

    def run(first: int, stop: int) -> None:
        for start in range(first, stop, size):
            chunk = x[start : min(start + size, stop)]
            k = chunk.shape[0]
            y = chunk.reshape(-1, n_seg).t().reshape(n_seg, k, c, *[2] * levels, nseg)  # a transpose
            y = y.permute(perm).contiguous()
            for lv in reversed(plan_stages(levels)):
                y = y.reshape(y.shape[0] << lv, *y.shape[1 + lv :])  # rows (position, last stage's band)
                y = _rows_stage(y, lv, True, roll_dim=y.dim() - 1)
            if k == 1:
                out[start].view(c * nseg, seg).copy_(y.view(seg, c * nseg).t())
            else:
                out[start : start + k].view(k, c, nseg, seg).copy_(
                    y.view(seg, c, k, nseg).permute(2, 1, 3, 0)
                )

    batch_parallel(x, run)
    return out
