"""Scale-invariant signal-to-distortion ratio (SI-SDR; Le Roux et al., "SDR - half-baked or well
done?", ICASSP 2019), the separation metric of the audio job.

SI-SDR projects the estimate on the reference and compares that target with what is left, so a
scaled estimate scores the same as the unscaled one: exactly what we need, because the pipeline
peak-normalises every window of every stem separately (the scale is in the sample's metadata, not
in the latents). Signals are made zero-mean first (the normalisation also removes the mean).
"""

from __future__ import annotations

import numpy as np

EPS = 1e-12


def si_sdr(estimate: np.ndarray, reference: np.ndarray) -> float:
    """SI-SDR in dB of `estimate` against `reference` (same shape, e.g. (channels, samples), flattened).

    A reference with no energy has no defined SI-SDR: that is NaN (callers skip it), not a number."""
    est = np.asarray(estimate, dtype=np.float64).reshape(-1)
    ref = np.asarray(reference, dtype=np.float64).reshape(-1)
    if est.shape != ref.shape:
        raise ValueError(f"estimate {np.shape(estimate)} and reference {np.shape(reference)} differ in shape")
    est = est - est.mean()
    ref = ref - ref.mean()
    energy = float(ref @ ref)
    if energy <= EPS:
        return float("nan")
    target = (est @ ref) / energy * ref
    noise = est - target
    return float(10 * np.log10((target @ target + EPS) / (noise @ noise + EPS)))


def si_sdr_batch(
    estimates: np.ndarray, references: np.ndarray, lengths: np.ndarray | None = None
) -> np.ndarray:
    """SI-SDR per item of (N, ..., samples) arrays, each cut to its valid length (C6 `valid_length`)."""
    out = np.empty(len(estimates))
    for i, (est, ref) in enumerate(zip(estimates, references, strict=True)):
        n = est.shape[-1] if lengths is None else int(lengths[i])
        out[i] = si_sdr(est[..., :n], ref[..., :n])
    return out
