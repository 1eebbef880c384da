"""Audio decoding: a window's bytes -> float32 (C, window) in [-0.5, 0.5] at the codec's rate. No I/O.

Steps, in order (each recorded in the sample's meta):
1. decode with libsndfile (soundfile): WAV/FLAC/Ogg/AIFF..., 8/16/24/32-bit PCM or float, to
   float64 at full scale +-1. `item.meta["read"][0]` says which source frame the bytes start at
   (the audio sources send a WAV excerpt: the window plus resampler context); without it the bytes
   are a whole file and the window is `meta["offset"]` (default 0). NaN/inf -> DecodeError;
   no frames -> DecodeError.
2. resample to the codec's rate (`AudioSettings.sample_rate`) by a polyphase FIR: Kaiser-windowed sinc
   (beta 5, 10 zero crossings a side, cutoff at the lower Nyquist) -- scipy.signal.resample_poly
   when scipy is installed, else `resample_numpy`, the same filter and phase in numpy (agrees to
   ~1e-12). Rates are reduced by their gcd, so 48k -> 44.1k is 147/160.
3. cut the window [offset, offset + window) at the codec's rate.
4. channels: as many as the codec -> unchanged; mono -> duplicated; more than the codec ->
   DecodeError, unless channel_policy="downmix": to stereo by the ITU-R BS.775 matrix in WAVE
   channel order (centre and surrounds at -3 dB, LFE dropped; 3 to 8 channels), to mono by the
   mean of that stereo pair. Other combinations are refused.
5. normalise as the reference does (pipeline.training.codec_data.normalize_audio), per channel mean:
   x = (w - mean) * scale with scale = 1 / (2 * (peak + 1e-8)), peak = max |w - mean| over the
   valid samples; restore the codec-rate, channel-mapped waveform (full scale +-1) by
   w = x / scale + mean (meta: scale, mean per channel).
6. a partial last window is zero-padded to `window` after normalising (never dropped);
   meta["valid_length"] (and its older name meta["valid"]) is the number of real samples at the
   codec's rate (the rest decodes to `mean`, not to silence, if restored blindly). Readers mask
   latent frame f as valid iff f * 2^J < valid_length (contract C6; pipeline.loaders.common.valid_mask
   also masks the encoder's padding steps).

Grouped stems (MUSDB, `AudioPolicy.stems`): an item holds one excerpt per stem; `decode_stems`
runs steps 1-4 per stem and normalises them jointly (one scale), giving (S, C, window).
"""

from __future__ import annotations

import dataclasses
import io
import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal

import numpy as np

from .image import Decoded, DecodeError
from .integrity import check_integrity

ZERO_CROSSINGS = 10  # filter half length in units of the slower rate's period (scipy's choice)
KAISER_BETA = 5.0
PEAK_EPS = 1e-8  # the reference's guard against silent windows
RESAMPLE_CHUNK = 1 << 14  # outputs per step of the numpy resampler (bounds its memory)
_A = 1 / math.sqrt(2)  # -3 dB
# stereo downmix by input channel count, WAVE order (FL FR FC LFE BL BR SL SR; 7 = ... BC SL SR)
_DOWNMIX: dict[int, list[list[float]]] = {
    3: [[1, 0, _A], [0, 1, _A]],
    4: [[1, 0, _A, 0], [0, 1, 0, _A]],
    5: [[1, 0, _A, _A, 0], [0, 1, _A, 0, _A]],
    6: [[1, 0, _A, 0, _A, 0], [0, 1, _A, 0, 0, _A]],
    7: [[1, 0, _A, 0, 0.5, _A, 0], [0, 1, _A, 0, 0.5, 0, _A]],
    8: [[1, 0, _A, 0, _A, 0, _A, 0], [0, 1, _A, 0, 0, _A, 0, _A]],
}


def rate_ratio(source_rate: int, rate: int) -> tuple[int, int]:
    """(up, down): rate / source_rate in lowest terms."""
    g = math.gcd(source_rate, rate)
    return rate // g, source_rate // g


def design_filter(up: int, down: int) -> np.ndarray:
    """The anti-aliasing low-pass FIR of resample_poly's default (gain `up`), 2 * 10 * max + 1 taps."""
    max_rate = max(up, down)
    half = ZERO_CROSSINGS * max_rate
    m = np.arange(2 * half + 1) - half
    h = np.sinc(m / max_rate) / max_rate * np.kaiser(2 * half + 1, KAISER_BETA)
    return h / h.sum() * up


def resample_numpy(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """Polyphase resampling of (C, N) by up/down, zero-phase and zero-padded at the ends, output
    length ceil(N * up / down): y[k] = sum_i x[i] h[k * down + half - i * up]."""
    if up == down:
        return x.copy()
    h = design_filter(up, down)
    half = (len(h) - 1) // 2
    taps = -(-len(h) // up)
    phases = np.zeros((up, taps))  # phases[p, m] = h[p + m * up]
    for p in range(up):
        row = h[p::up]
        phases[p, : len(row)] = row
    channels, n = x.shape
    n_out = -(-n * up // down)
    padded = np.concatenate([np.zeros((channels, taps)), x, np.zeros((channels, 1))], axis=1)
    y = np.empty((channels, n_out))
    for start in range(0, n_out, RESAMPLE_CHUNK):
        k = np.arange(start, min(n_out, start + RESAMPLE_CHUNK))
        t = k * down + half
        newest, phase = t // up, t % up  # the newest input index under the filter, and its phase
        index = newest[:, None] - np.arange(taps)[None, :]  # (K, taps), may fall off either end
        index = np.clip(index, -taps, n) + taps  # into `padded`: zeros outside [0, n)
        y[:, start : start + len(k)] = np.einsum("ckm,km->ck", padded[:, index], phases[phase])
    return y


def resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    """(C, N) float64 resampled by up/down: scipy's resample_poly if available, else numpy's."""
    if up == down:
        return x
    try:
        from scipy.signal import resample_poly
    except ImportError:
        return resample_numpy(x, up, down)
    return resample_poly(x, up, down, axis=-1)


def map_channels(x: np.ndarray, channels: int, policy: str) -> tuple[np.ndarray, str]:
    """The documented channel rule; returns (array, what was done)."""
    have = x.shape[0]
    if have == channels:
        return x, "none"
    if have == 1:
        return np.repeat(x, channels, axis=0), "duplicate"
    if have > channels and policy == "downmix" and channels in (1, 2):
        if have == 2:
            stereo = x
        elif have in _DOWNMIX:
            stereo = np.asarray(_DOWNMIX[have]) @ x
        else:
            raise DecodeError(f"no downmix for {have} channels (3 to 8 are supported)")
        return (stereo if channels == 2 else stereo.mean(axis=0, keepdims=True)), "downmix"
    hint = " (use --channel-policy downmix)" if have > channels and channels in (1, 2) else ""
    raise DecodeError(f"audio has {have} channels; the codec takes {channels}{hint}")


def normalise(x: np.ndarray) -> tuple[np.ndarray, float, list[float]]:
    """Per-channel mean removed, peak to 0.5: (x, scale, mean) with waveform = x / scale + mean."""
    mean = x.mean(axis=1)
    centred = x - mean[:, None]
    scale = 1.0 / (2.0 * (float(np.abs(centred).max()) + PEAK_EPS))
    return centred * scale, scale, [float(m) for m in mean]


@dataclass(frozen=True)
class AudioPolicy:
    """How audio becomes codec input. Recorded in the manifest: latents depend on it."""

    sample_rate: int = 44100  # the codec's rate: everything is resampled to it
    window: int = 2**17  # samples per window at that rate
    hop: int = 2**17  # window starts are multiples of hop
    channels: int = 2  # the codec's channel count
    channel_policy: Literal["refuse", "downmix"] = "refuse"
    # grouped stems (MUSDB): names of the signals every item holds, decoded to (S, C, window); None:
    # one signal per item. Only recorded when set, so runs of single signals keep their settings hash.
    stems: tuple[str, ...] | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.stems is None:
            d.pop("stems")
        else:
            d["stems"] = list(self.stems)
        return d


def decode_audio(data: bytes, policy: AudioPolicy, meta: dict[str, Any] | None = None) -> Decoded:
    """Decode, resample, cut, map channels, normalise and pad one window (see the module docstring)."""
    meta = meta or {}
    _check_listing(meta, policy)
    segment, info = _decode_window(data, policy, meta)
    segment, scale, mean = normalise(segment)
    out = np.zeros((policy.channels, policy.window), dtype=np.float32)
    out[:, : segment.shape[1]] = segment
    return Decoded(array=out, meta=info | {"scale": scale, "mean": mean})


def _decode_window(
    data: bytes, policy: AudioPolicy, meta: dict[str, Any]
) -> tuple[np.ndarray, dict[str, Any]]:
    """Steps 1-4: the window's real samples (C, valid) at the codec's rate, float64, full scale."""
    import soundfile as sf

    if not data:
        raise DecodeError("empty file (0 bytes)")
    check_integrity(data)  # a cut WAV would read as a shorter clip
    try:
        x, source_rate = sf.read(io.BytesIO(data), dtype="float64", always_2d=True)
    except Exception as err:  # noqa: BLE001 - libsndfile's errors vary by format
        raise DecodeError(f"not a readable audio file: {type(err).__name__}: {err}") from err
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise DecodeError("empty audio (0 frames)")
    if not np.isfinite(x).all():
        raise DecodeError(f"audio has {int((~np.isfinite(x)).sum())} NaN/inf samples")
    up, down = rate_ratio(int(source_rate), policy.sample_rate)
    first = int(meta.get("read", [0])[0])
    if first * up % down:
        raise ValueError(f"excerpt starts at frame {first}, which is not on the {policy.sample_rate} Hz grid")
    y = resample(x.T, up, down)
    start = int(meta.get("offset", 0)) - first * up // down
    segment = y[:, start : start + policy.window]
    valid = segment.shape[1]
    if start < 0 or valid == 0:
        raise DecodeError(f"window at {meta.get('offset', 0)} is outside the audio ({y.shape[1]} samples)")
    segment, channel_op = map_channels(segment, policy.channels, policy.channel_policy)
    info = {
        "offset": int(meta.get("offset", 0)),
        "valid": int(valid),
        "valid_length": int(valid),
        "sample_rate": policy.sample_rate,
        "source_rate": int(source_rate),
        "channels_in": int(x.shape[1]),
        "channel_op": channel_op,
    }
    return segment, info


def unpack_stems(data: bytes) -> dict[str, bytes]:
    """The `<stem>.wav` excerpts of a grouped MUSDB item (pipeline.sources.audio.pack_stems)."""
    import tarfile

    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            out = {}
            for member in tar.getmembers():
                if not member.isfile() or not member.name.endswith(".wav") or "/" in member.name:
                    raise DecodeError(f"unexpected member {member.name!r} in a stems item")
                out[member.name[: -len(".wav")]] = tar.extractfile(member).read()
            return out
    except tarfile.TarError as err:
        raise DecodeError(f"not a stems item (a tar of <stem>.wav): {err}") from err


def decode_stems(data: bytes, policy: AudioPolicy, meta: dict[str, Any] | None = None) -> Decoded:
    """A grouped MUSDB window -> float32 (S, C, window), stems in `policy.stems` order (mixture first).

    Each stem goes through steps 1-4 on its own (its excerpt, rate and channel count); the window's
    real length is the first stem's (the listing's `valid_length`), shorter stems are zero-padded to
    it (a stem that ends before the window starts is silence there). Normalisation is joint, so that
    the stems keep their share of the mixture: each stem's own per-channel mean is removed and ONE
    scale, 1 / (2 * (peak + 1e-8)) with the peak over all stems, applies to all of them (meta:
    scale, and per stem its mean in `stem_mean`; waveform of stem s = x[s] / scale + stem_mean[s]).
    When the mixture is the sum of the stems, x[mixture] is the sum of the other rows."""
    meta = meta or {}
    _check_listing(meta, policy)
    stems = tuple(policy.stems or ())
    files = meta.get("stem_files", {})
    parts = unpack_stems(data)
    if tuple(parts) != stems:
        raise DecodeError(f"item holds stems {list(parts)}, the run decodes {list(stems)}")
    segments, infos = [], []
    for k, stem in enumerate(stems):
        listed = files.get(stem, {})
        if k and listed.get("valid") == 0:  # this stem ends before the window starts: silence
            segments.append(np.zeros((policy.channels, 0)))
            infos.append({"valid": 0, "source_rate": listed.get("source_rate"), "channels_in": None})
            continue
        read = listed.get("read", meta.get("read", [0]))
        try:
            segment, info = _decode_window(parts[stem], policy, meta | {"read": read})
        except DecodeError as err:
            raise DecodeError(f"{stem}: {err}") from err
        segments.append(segment)
        infos.append(info)
    valid = infos[0]["valid"]
    out = np.zeros((len(stems), policy.channels, policy.window), dtype=np.float32)
    means, peak = [], 0.0
    centred = []
    for segment in segments:
        segment = segment[:, :valid]
        mean = segment.mean(axis=1) if segment.shape[1] else np.zeros(policy.channels)
        centred.append(segment - mean[:, None])
        means.append([float(m) for m in mean])
        peak = max(peak, float(np.abs(centred[-1]).max(initial=0.0)))
    scale = 1.0 / (2.0 * (peak + PEAK_EPS))
    for s, segment in enumerate(centred):
        out[s, :, : segment.shape[1]] = segment * scale
    info = infos[0] | {
        "scale": scale,
        "stems": list(stems),
        "stem_mean": means,
        "stem_source_rate": [i["source_rate"] for i in infos],
        "stem_channels_in": [i["channels_in"] for i in infos],
        "stem_valid": [i["valid"] for i in infos],
    }
    return Decoded(array=out, meta=info)


def _check_listing(meta: dict[str, Any], policy: AudioPolicy) -> None:
    """Refuse an item listed for another window or rate: its offsets would mean something else."""
    listed = (meta.get("window", policy.window), meta.get("rate", policy.sample_rate))
    if listed != (policy.window, policy.sample_rate):
        raise ValueError(
            f"item was listed for {listed[0]}-sample windows at {listed[1]} Hz, the preprocessor cuts "
            f"{policy.window} at {policy.sample_rate} Hz: open the source with the run's settings"
        )


@dataclass(frozen=True)
class AudioPreprocessor:
    """The audio branch of the runtime: window bytes -> float32 (C, window) + metadata."""

    policy: AudioPolicy
    modality: str = "audio"
    device_decode: ClassVar[bool] = False  # decoded on the CPU (pipeline.preprocess.factory.Preprocessor)

    @classmethod
    def from_settings(cls, audio: Any, codec: Any) -> AudioPreprocessor:
        """Built from the run's AudioSettings (window, hop, sample rate, channel policy; checked
        there) and the codec's channels."""
        try:
            import soundfile  # noqa: F401
        except ImportError as err:
            raise ImportError("audio needs soundfile: pip install 'walloc-pipeline[audio]'") from err
        c = codec.config
        if c.kind != "1d":
            raise ValueError(f"audio needs a 1-D codec; {getattr(codec, 'name', 'this codec')} is {c.kind}")
        policy = AudioPolicy(
            sample_rate=int(audio.sample_rate),
            window=int(audio.window),
            hop=int(audio.hop or audio.window),
            channels=c.channels,
            channel_policy=audio.channel_policy,
        )
        return cls(policy)

    def with_stems(self, stems: tuple[str, ...] | None) -> AudioPreprocessor:
        """The same preprocessing for items that hold these stems together (None: one signal each)."""
        return dataclasses.replace(
            self, policy=dataclasses.replace(self.policy, stems=stems and tuple(stems))
        )

    def decode(self, data: bytes, item: Any = None) -> Decoded:
        if self.policy.stems:
            return decode_stems(data, self.policy, getattr(item, "meta", None))
        return decode_audio(data, self.policy, getattr(item, "meta", None))

    def codec_input(self, array: np.ndarray) -> np.ndarray:
        return np.asarray(array, dtype=np.float32)

    def input_size(self, array: np.ndarray) -> tuple[int, ...]:
        return tuple(array.shape[-1:])

    def fixed_shape(self) -> tuple[int, ...] | None:
        """(C, window), or (S, C, window) for grouped stems: latents are then (S, *latent)."""
        lead = (len(self.policy.stems),) if self.policy.stems else ()
        return (*lead, self.policy.channels, self.policy.window)

    def bucket_shapes(self) -> dict[str, tuple[int, ...]] | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "modality": "audio",
            **self.policy.to_dict(),
            "resampler": f"polyphase kaiser({KAISER_BETA}) sinc, {ZERO_CROSSINGS} zero crossings",
            "normalisation": (
                "per stem and channel mean removed, one scale for all stems: their peak to 0.5 "
                "(waveform of stem s = x[s] / scale + stem_mean[s])"
                if self.policy.stems
                else "per-channel mean removed, peak to 0.5 (waveform = x / scale + mean)"
            ),
        }
