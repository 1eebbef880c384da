"""A minimal, valid SoundFont 2 file built in memory, so tests render real SF2 synthesis offline.

Each preset is one instrument with one looped single-cycle-multiple sample at 44 kHz whose loop is an
exact number of periods of 440 Hz (100 samples each), so notes sound at their pitch without clicks.
Format: RIFF 'sfbk' with INFO, sdta/smpl and the nine pdta records (SoundFont 2.04 spec, section 7).
"""

from __future__ import annotations

import struct

import numpy as np

SAMPLE_RATE = 44000
ROOT_KEY = 69  # 440 Hz: 100 samples per period at 44 kHz
LOOP = 2000  # 20 periods


def _chunk(tag: bytes, data: bytes) -> bytes:
    pad = b"\0" if len(data) % 2 else b""
    return tag + struct.pack("<I", len(data)) + data + pad


def _list(tag: bytes, *chunks: bytes) -> bytes:
    return _chunk(b"LIST", tag + b"".join(chunks))


def _name(s: str) -> bytes:
    return s.encode()[:19].ljust(20, b"\0")


def waveform(kind: str) -> np.ndarray:
    """LOOP samples of a 440 Hz periodic wave at 44 kHz: 'sine', 'square' (odd harmonics) or 'saw'."""
    t = np.arange(LOOP) / SAMPLE_RATE
    harmonics = {"sine": [1], "square": [1, 3, 5, 7, 9], "saw": [1, 2, 3, 4, 5, 6]}[kind]
    x = sum(np.sin(2 * np.pi * 440 * h * t) / h for h in harmonics)
    return (0.8 * x / np.abs(x).max() * 32767).astype("<i2")


def build_sf2(kinds: tuple[str, ...] = ("sine", "square", "saw")) -> bytes:
    """An SF2 whose preset k (bank 0) plays waveform kinds[k] over the whole keyboard."""
    smpl, shdr, inst, ibag, igen, phdr, pbag, pgen = b"", b"", b"", b"", b"", b"", b"", b""
    start = 0
    for k, kind in enumerate(kinds):
        data = waveform(kind).tobytes() + b"\0" * 2 * 46  # 46 zero samples after each sample (spec)
        smpl += data
        end = start + LOOP
        shdr += struct.pack(
            "<20sIIIIIBbHH", _name(kind), start, end, start, end, SAMPLE_RATE, ROOT_KEY, 0, 0, 1
        )
        start += len(data) // 2
        inst += struct.pack("<20sH", _name(kind), k)
        ibag += struct.pack("<HH", 2 * k, 0)
        igen += struct.pack("<HH", 54, 1) + struct.pack("<HH", 53, k)  # sampleModes = loop, sampleID
        phdr += struct.pack("<20sHHHIII", _name(kind), k, 0, k, 0, 0, 0)
        pbag += struct.pack("<HH", k, 0)
        pgen += struct.pack("<HH", 41, k)  # instrument
    n = len(kinds)
    shdr += struct.pack("<20sIIIIIBbHH", _name("EOS"), 0, 0, 0, 0, 0, 0, 0, 0, 0)
    inst += struct.pack("<20sH", _name("EOI"), n)
    ibag += struct.pack("<HH", 2 * n, 0)
    igen += struct.pack("<HH", 0, 0)
    phdr += struct.pack("<20sHHHIII", _name("EOP"), 0, 0, n, 0, 0, 0)
    pbag += struct.pack("<HH", n, 0)
    pgen += struct.pack("<HH", 0, 0)
    mod = b"\0" * 10
    info = _list(b"INFO", _chunk(b"ifil", struct.pack("<HH", 2, 1)), _chunk(b"isng", b"EMU8000\0"),
                 _chunk(b"INAM", b"tiny test font\0"))  # fmt: skip
    sdta = _list(b"sdta", _chunk(b"smpl", smpl))
    pdta = _list(
        b"pdta",
        _chunk(b"phdr", phdr),
        _chunk(b"pbag", pbag),
        _chunk(b"pmod", mod),
        _chunk(b"pgen", pgen),
        _chunk(b"inst", inst),
        _chunk(b"ibag", ibag),
        _chunk(b"imod", mod),
        _chunk(b"igen", igen),
        _chunk(b"shdr", shdr),
    )
    return _chunk(b"RIFF", b"sfbk" + info + sdta + pdta)
