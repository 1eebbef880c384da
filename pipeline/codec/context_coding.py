"""A context-adaptive entropy coder for integer latents: the `context` latent method (entropy.py).

Why: WaLLoC latents are far from i.i.d. The first KLT channels are low-pass images (neighbours
predict them), and every channel's local magnitude follows its neighbours' (texture). Generic coders
see little of that: zstd none, PNG/WebP a fixed set of raster predictors over a mosaic of planes.

Model (forward-adaptive parameters, backward-adaptive statistics; no training, deterministic):

    planes      the last two dims (h, w); leading dims are flattened into P planes; a 2-D shape
                (C, L) is C planes of 1 x L, a 1-D shape (L,) one plane of 1 x L
    order       an interpolation lattice over each plane: (0, 0) first; then, for strides
                s = S, S/2, .., 2 (S the power of two >= max(h, w)), the centres of the s-grid
                (4 diagonal neighbours at distance s/2 known), then the edge midpoints (4 axial
                neighbours known). One pass = one (stride, phase): all planes together.
    prediction  pred = round(W/32 * mean of the known neighbours), W per plane (int8), clipped
    context     activity a = mean |neighbour - their mean| in the plane, x = the mean of a over
                all planes at that position (texture shows in every channel); per plane the
                encoder fits E|r| ~ C0/4 + C2/32 * a + C3/32 * x by least squares (exact
                rationals) and sends W, C0, C2, C3 (int8); the estimate picks one of 16 classes
                (thresholds 1/4 .. 48), class 15 where no neighbour is known
    statistics  one adaptive histogram of residuals r = z - pred per class, shared by all planes:
                a geometric prior, then counts of everything coded in earlier passes
    coding      rANS (constriction's AnsCoder, Categorical(perfect=False) over the 2^(b+1) - 3
                possible residuals; every residual keeps a nonzero probability)

Every model quantity is an integer or an exact IEEE operation on integers (no exp/log, no
summation order), so encoder and decoder agree on any machine. The payload is: 1 byte model version,
4 bytes per plane (W, C0, C2, C3; int8), then the ANS coder's 32-bit words, little-endian.

Costs: one numpy pass per lattice step (2 log2(max(h, w)) + 1 of them) and one coder call per
(pass, class) present; see README "Entropy coding of latents" for measured figures.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

MODEL_VERSION = 1
TH4 = np.array([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192], dtype=np.int64)  # E|r| * 4
CLASSES = len(TH4) + 1
NO_NEIGHBOUR_CLASS = CLASSES - 1
UNIT = 256  # count added per coded residual
PRIOR_SYMBOLS = 128  # the prior weighs as much as this many residuals (chosen on training latents)
W_ONE = 32  # W / 32 scales the neighbour mean
PARAMS = 4  # bytes per plane: W, C0, C2, C3


class ContextCodingError(ValueError):
    """A payload that does not decode under the model."""


@dataclass(frozen=True)
class Pass:
    """One lattice step: flat positions of a plane and, per neighbour offset, flat index + validity."""

    pos: np.ndarray  # (N,) int64 flat indices into h*w
    nb_index: np.ndarray  # (4, N) int64 flat indices; h*w (a column that holds 0) where invalid
    count: np.ndarray  # (N,) int32 known neighbours, 0..4
    act_scale: np.ndarray  # (N,) int64: 144 / count^2 (0 where count = 0)
    has: np.ndarray  # (N,) bool: count > 0
    all_have: bool  # every position has a known neighbour (all passes but the first)
    missing: np.ndarray  # (N,) int32: 4 - count
    n32: np.ndarray  # (N,) int32: 32 * max(count, 1)     (rounding of the prediction)
    n64: np.ndarray  # (N,) int32: 64 * max(count, 1)
    n2: np.ndarray  # (N,) int32: max(count, 1)^2
    n2x8: np.ndarray  # (N,) int32: 8 * max(count, 1)^2


def _plane_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) == 1:
        return 1, 1, shape[0]
    if len(shape) == 2:
        return shape[0], 1, shape[1]
    return math.prod(shape[:-2]), shape[-2], shape[-1]


@functools.lru_cache(maxsize=8)
def lattice(h: int, w: int) -> tuple[Pass, ...]:
    """The coding order of an h x w plane (cached: loaders decode many latents of one shape, aspect
    buckets a few; ~60 bytes per position, so 8 shapes of 512 x 512 latents hold ~130 MB)."""
    ii, jj = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    s = 1
    while s < max(h, w):
        s *= 2
    steps = [((ii == 0) & (jj == 0), [])]
    while s > 1:
        hs = s // 2
        centres = (ii % s == hs) & (jj % s == hs)
        steps.append((centres, [(-hs, -hs), (-hs, hs), (hs, -hs), (hs, hs)]))
        edges = ((ii % s == 0) & (jj % s == hs)) | ((ii % s == hs) & (jj % s == 0))
        steps.append((edges, [(-hs, 0), (hs, 0), (0, -hs), (0, hs)]))
        s = hs
    passes = []
    for mask, offsets in steps:
        i, j = np.nonzero(mask)
        if not len(i):
            continue
        index = np.full((4, len(i)), h * w, dtype=np.int64)
        for k, (di, dj) in enumerate(offsets):
            a, b = i + di, j + dj
            inside = (a >= 0) & (a < h) & (b >= 0) & (b < w)
            index[k, inside] = a[inside] * w + b[inside]
        count = (index < h * w).sum(0).astype(np.int32)
        act_scale = np.where(count > 0, 144 // np.maximum(count, 1) ** 2, 0)
        n1 = np.maximum(count, 1)
        flat = (i * w + j).astype(np.int64)
        has = count > 0
        passes.append(
            Pass(
                flat,
                index,
                count,
                act_scale,
                has,
                bool(has.all()),
                4 - count,
                32 * n1,
                64 * n1,
                n1 * n1,
                8 * n1 * n1,
            )
        )
    return tuple(passes)


@functools.lru_cache(maxsize=8)
def prior_counts(bits: int) -> np.ndarray:
    """(CLASSES, alphabet) int64: a two-sided geometric prior per class, at least 1 everywhere.

    theta = c / (c + 1) for the class's typical |r| c (a rational), powers by repeated
    multiplication: exact IEEE operations, so the table is the same on every machine."""
    max_int = 2 ** (bits - 1) - 1
    size = 4 * max_int + 1
    bounds = np.concatenate([[0], TH4, [256]]) / 4
    out = np.zeros((CLASSES, size), dtype=np.int64)
    for k in range(CLASSES):
        c = float(bounds[k] + bounds[k + 1]) / 2
        theta = c / (c + 1)
        peak = UNIT * PRIOR_SYMBOLS * (1 - theta) / (1 + theta)
        half = [peak]
        for _ in range(2 * max_int):
            half.append(half[-1] * theta)
        half = np.floor(np.array(half) + 0.5).astype(np.int64)
        out[k] = np.maximum(1, np.concatenate([half[:0:-1], half]))
    return out


# class of floor(4 * estimate), clipped to [0, TH4[-1]]: the number of thresholds <= it
_CLASS_OF = np.searchsorted(TH4, np.arange(TH4[-1] + 1), side="right").astype(np.uint8)


def _neighbours(Z: np.ndarray, p: Pass) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per plane: sum of the known neighbours S and A = sum |count * v - S| (count^2 x their mean
    absolute deviation); per position: X = floor(mean of A over the planes) (texture, all channels).
    Z is (P, h*w + 1) with a last column of zeros, which invalid neighbours index: each adds |S|
    to the sum of |count * v - S|, taken off again."""
    values = Z[:, p.nb_index]  # (P, 4, N)
    S = values.sum(1, dtype=np.int32)
    A = np.abs(p.count[None, None] * values - S[:, None]).sum(1, dtype=np.int32) - p.missing * np.abs(S)
    X = (A.sum(0, dtype=np.int64) // len(Z)).astype(np.int32)
    return S, A, X


def _predict(S: np.ndarray, p: Pass, W: np.ndarray, max_int: int) -> np.ndarray:
    """round(W/32 * S/count) (ties up), clipped to the latent range; 0 without neighbours."""
    pred = (2 * W[:, None] * S + p.n32) // p.n64
    return np.clip(pred if p.all_have else pred * p.has, -max_int, max_int)


def _classes(A: np.ndarray, X: np.ndarray, p: Pass, C: np.ndarray) -> np.ndarray:
    """Class = number of thresholds (in quarters) <= floor(4 * estimate of |r|), where
    estimate = C0/4 + C2/32 * A/count^2 + C3/32 * X/count^2 (exact integer floor)."""
    lhs = C[:, 2:3] * A + C[:, 3:4] * X + 8 * C[:, 1:2] * p.n2
    cls = _CLASS_OF[np.clip(lhs // p.n2x8, 0, TH4[-1])]
    return cls if p.all_have else np.where(p.has, cls, np.uint8(NO_NEIGHBOUR_CLASS))


def _histograms(cls: np.ndarray, r: np.ndarray, size: int) -> np.ndarray:
    """(CLASSES, size) counts of what a pass coded, UNIT per residual."""
    flat = np.bincount(cls.astype(np.int64) * size + r, minlength=CLASSES * size)
    return (UNIT * flat).reshape(CLASSES, size).astype(np.float64)  # exact: counts stay << 2^53


def _constriction():
    """(Categorical, AnsCoder), imported on first use (a compiled extension whose submodules are
    attributes, not importable paths)."""
    import constriction

    return constriction.stream.model.Categorical, constriction.stream.stack.AnsCoder


def _round_int8(numerator: int, denominator: int) -> int:
    """round(numerator / denominator) (exact; ties to even), clipped to int8."""
    return max(-128, min(127, round(Fraction(numerator, denominator))))


def _det(m: list[list[int]]) -> int:
    if len(m) == 1:
        return m[0][0]
    if len(m) == 2:
        return m[0][0] * m[1][1] - m[0][1] * m[1][0]
    return sum((-1) ** c * m[0][c] * _det([row[:c] + row[c + 1 :] for row in m[1:]]) for c in range(len(m)))


def _solve(m: list[list[int]], b: list[int]) -> tuple[list[int], int] | None:
    """Cramer's rule in Python integers: (numerators, denominator) of m^-1 b; None when singular."""
    det = _det(m)
    if det == 0:
        return None
    cols = range(len(b))
    return [_det([[b[i] if j == c else m[i][j] for j in cols] for i in cols]) for c in cols], det


def _fit_params(Z: np.ndarray, passes: tuple[Pass, ...], max_int: int) -> tuple[np.ndarray, list]:
    """Encoder only: (P, 4) int8 parameters W, C0, C2, C3 per plane by least squares, in exact
    integer arithmetic (so the encoder gives the same bytes on any machine), and each pass's
    neighbour statistics (S, A, X) for the encoder to reuse."""
    P = len(Z)
    xm = np.zeros(P, dtype=object)
    mm = np.zeros(P, dtype=object)
    stats = []
    for p in passes:
        S, A, X = _neighbours(Z, p)
        m12 = S * ((12 // np.maximum(p.count, 1)) * p.has)[None]  # 12 x the neighbour mean (or 0)
        xm += (Z[:, p.pos] * m12).sum(1, dtype=np.int64).astype(object)
        mm += (m12.astype(np.int64) ** 2).sum(1).astype(object)
        stats.append((S, A, X))
    W = np.array(
        [_round_int8(W_ONE * 12 * int(a), int(b)) if b else 0 for a, b in zip(xm, mm, strict=True)],
        dtype=np.int64,
    )
    W = np.clip(W, -2 * W_ONE, 2 * W_ONE)
    # |r| ~ b0 + b1 a + b2 x, with a = 144 A / count^2 and x = 144 X / count^2 (integers)
    sums = np.zeros((P, 9), dtype=object)  # N, a, x, aa, ax, xx, t, at, xt
    for p, (S, A, X) in zip(passes, stats, strict=True):
        keep = p.has
        if not keep.any():
            continue
        t = np.abs(Z[:, p.pos] - _predict(S, p, W, max_int))[:, keep].astype(np.int64)
        a = (A * p.act_scale[None])[:, keep].astype(np.int64)
        x = (X * p.act_scale)[keep][None]
        cols = (
            np.full(P, keep.sum()),
            a.sum(1),
            np.full(P, x.sum()),
            (a * a).sum(1),
            (a * x).sum(1),
            np.full(P, (x * x).sum()),
            t.sum(1),
            (a * t).sum(1),
            (x * t).sum(1),
        )
        for col, v in enumerate(cols):
            sums[:, col] += v.astype(object)
    C = np.zeros((P, PARAMS), dtype=np.int64)
    C[:, 0] = W
    for k in range(P):
        n, sa, sx, saa, sax, sxx, st, sat, sxt = (int(v) for v in sums[k])
        if n == 0:
            continue
        fit = _solve([[n, sa, sx], [sa, saa, sax], [sx, sax, sxx]], [st, sat, sxt])
        if fit is None:  # x constant (one plane) or a constant: fewer terms
            two = _solve([[n, sa], [sa, saa]], [st, sat])
            fit = ([*two[0], 0], two[1]) if two else ([st, 0, 0], n)
        (b0, b1, b2), det = fit
        C[k, 1:] = _round_int8(4 * b0, det), _round_int8(32 * 144 * b1, det), _round_int8(32 * 144 * b2, det)
    return C, stats


def encode_planes(u: np.ndarray, bits: int) -> bytes:
    """uint8 values u = z + 2^(bits-1) of any shape -> payload."""
    Categorical, AnsCoder = _constriction()
    max_int = 2 ** (bits - 1) - 1
    P, h, w = _plane_shape(u.shape)
    Z = np.zeros((P, h * w + 1), dtype=np.int32)  # + the zero column of invalid neighbours
    Z[:, : h * w] = u.reshape(P, h * w).astype(np.int32) - (max_int + 1)
    passes = lattice(h, w)
    C, stats = _fit_params(Z, passes, max_int)
    C = C.astype(np.int32)
    counts = prior_counts(bits).astype(np.float64)
    size = counts.shape[1]
    groups = []  # (residuals, class histogram) in decoding order
    for p, (S, A, X) in zip(passes, stats, strict=True):
        r = (Z[:, p.pos] - _predict(S, p, C[:, 0], max_int) + 2 * max_int).reshape(-1)
        cls = _classes(A, X, p, C).reshape(-1)
        order = np.argsort(cls, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(cls, minlength=CLASSES))])
        for k in np.flatnonzero(np.diff(bounds)):
            symbols = r[order[bounds[k] : bounds[k + 1]]].astype(np.int32)
            groups.append((symbols, counts[k].copy()))
        counts += _histograms(cls, r, size)
    coder = AnsCoder()  # a stack: encode the last group first, each reversed, so decoding runs forward
    for symbols, table in reversed(groups):
        coder.encode_reverse(symbols, Categorical(table, perfect=False))
    params = C.astype(np.int8).tobytes()
    words = coder.get_compressed().astype("<u4").tobytes()
    return bytes([MODEL_VERSION]) + params + words


def decode_planes(payload: bytes, shape: tuple[int, ...], bits: int) -> np.ndarray:
    """Inverse of encode_planes: uint8 array of `shape`."""
    Categorical, AnsCoder = _constriction()

    max_int = 2 ** (bits - 1) - 1
    P, h, w = _plane_shape(shape)
    head = 1 + PARAMS * P
    if len(payload) < head or payload[0] != MODEL_VERSION:
        version = payload[0] if payload else None
        raise ContextCodingError(
            f"context payload: need model version {MODEL_VERSION} and {PARAMS * P} parameter bytes, "
            f"got version {version} and {len(payload)} bytes"
        )
    if (len(payload) - head) % 4:
        raise ContextCodingError(
            f"context payload: {len(payload) - head} coder bytes, not whole 32-bit words"
        )
    # checked before allocating, so a forged shape cannot make us allocate without bound: the coder
    # gives every residual a probability of at least 2^-24, so a value costs at least
    # (alphabet - 1) / 2^24 / ln 2 bits (all-zero latents use ~10x more than that bound, halved here)
    alphabet = 4 * max_int + 1
    coded_bits = 32 * ((len(payload) - head) // 4) + 64
    if P * h * w > 2 * coded_bits * (2**24 * math.log(2) / (alphabet - 1)):
        raise ContextCodingError(
            f"context payload of {len(payload)} bytes cannot hold {P * h * w} values: the shape is forged"
        )
    params = np.frombuffer(payload, dtype=np.int8, count=PARAMS * P, offset=1).reshape(P, PARAMS)
    C = params.astype(np.int32)  # every product below fits int32: |C| < 128, A, X < 2^13
    words = np.frombuffer(payload, dtype="<u4", offset=head).astype(np.uint32)
    decoder = AnsCoder(words)
    passes = lattice(h, w)
    counts = prior_counts(bits).astype(np.float64)
    size = counts.shape[1]
    Z = np.zeros((P, h * w + 1), dtype=np.int32)  # + the zero column of invalid neighbours
    for p in passes:
        S, A, X = _neighbours(Z, p)
        cls = _classes(A, X, p, C).reshape(-1)
        order = np.argsort(cls, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(np.bincount(cls, minlength=CLASSES))])
        sizes = np.diff(bounds)
        try:
            groups = [
                decoder.decode(Categorical(counts[k], perfect=False), int(sizes[k]))
                for k in np.flatnonzero(sizes)
            ]
        except (ValueError, RuntimeError, AssertionError) as e:
            raise ContextCodingError(f"context payload does not decode: {e}") from e
        r = np.empty(len(cls), dtype=np.int32)
        r[order] = np.concatenate(groups)
        z = _predict(S, p, C[:, 0], max_int) + r.reshape(P, -1) - 2 * max_int
        if z.size and (z.min() < -max_int or z.max() > max_int):
            raise ContextCodingError(f"context payload decodes to values outside +-{max_int}")
        Z[:, p.pos] = z
        counts += _histograms(cls, r, size)
    if not decoder.is_empty():
        raise ContextCodingError("context payload has data beyond its latents")
    return (Z[:, : h * w] + max_int + 1).astype(np.uint8).reshape(shape)
