"""Render real multi-part scores per part with a real SoundFont: true stems + mixtures for source separation.

No multitrack music with separate stems can be fetched from PyPI or Debian, so we make it honestly:
- scores: J. S. Bach's four-part chorales from music21's bundled corpus (read out of the music21 wheel,
  every file checked against the wheel's RECORD; parsed with music21), soprano/alto/tenor/bass;
- sounds: FluidR3_GM.sf2 from Debian's `fluid-soundfont-gm` (read out of the .deb, checked against the
  pinned sha256 and the package's md5sums; nothing is installed);
- renderer: TinySoundFont (PyPI `tinysoundfont`, a C SoundFont 2 synthesizer) -- each voice alone on
  its own synthesizer, so every stem is exactly what that part contributes.

Each chorale becomes one track with a seeded tempo and seeded General MIDI instruments (a melody
instrument on the soprano, two inner-voice instruments, a bass instrument), in MUSDB stem names so
the pipeline's `musdb` source reads it unchanged: vocals = soprano (the melody), other = alto + tenor,
bass = bass; there is no drums stem. The mixture is the sum of the stems (one gain for all, mixture
peak at -2 dB); files are 44.1 kHz stereo FLAC, 24-bit.

Layout written under --out (default data/stems/, git-ignored; downloads cached in data/downloads/):

    train/<track>/{mixture,vocals,bass,other}.flac     every 5th chorale goes to test/ instead
    test/<track>/...
    scores/<bwv>.mxl                                   the scores, byte for byte from the wheel
    MANIFEST.tsv                                       per track: split, score sha256, tempo, programs,
                                                       seconds, sha256 of each FLAC
    SOURCES.json                                       packages, versions, licences, sha256s

Usage: python scripts/make_stems.py [--tracks 20] [--out data/stems] (needs apt-get after `apt-get
update`, pip, and `pip install music21 soundfile` + `pip install --no-deps tinysoundfont`).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_data import Deb, DebFile, Downloads, log, sha256_file, wheel_members, write_tsv  # noqa: E402

SOUNDFONT = Deb(
    "fluid-soundfont-gm", "3.1-5.3", "6f531493ac4e4d9772fd96b2488ea1790af81c196135fbdd25997da0781fc60e"
)
SF2_MEMBER = "./usr/share/sounds/sf2/FluidR3_GM.sf2"
MUSIC21_VERSION = "10.5.1"
TINYSOUNDFONT_VERSION = "0.3.7"
RATE = 44100
STEMS = ("vocals", "bass", "other")  # MUSDB names, in the order the separation job predicts them
VOICE_STEM = {"soprano": "vocals", "alto": "other", "tenor": "other", "bass": "bass"}
# General MIDI programs (0-based) per role, drawn per track with the track's seed
PROGRAMS = {
    "soprano": [73, 68, 40, 71, 56, 64],  # flute, oboe, violin, clarinet, trumpet, soprano sax
    "alto": [41, 69, 65, 71, 60, 52],  # viola, english horn, alto sax, clarinet, french horn, choir aahs
    "tenor": [42, 60, 66, 57, 70, 11],  # cello, french horn, tenor sax, trombone, bassoon, vibraphone
    "bass": [43, 70, 58, 32, 33, 42],  # contrabass, bassoon, tuba, acoustic bass, finger bass, cello
}
PAN = {"soprano": 56, "alto": 40, "tenor": 88, "bass": 72}  # MIDI CC10, 64 = centre
TAIL_S = 1.5  # release after the last note
PEAK = 10 ** (-2 / 20)


@dataclass(frozen=True)
class Note:
    start: float  # seconds
    duration: float  # seconds
    key: int  # MIDI key, 60 = middle C
    velocity: int  # 1..127


@dataclass(frozen=True)
class Voice:
    """One part of a score with the GM program that plays it and the stem it belongs to."""

    name: str
    stem: str
    program: int
    pan: int = 64
    notes: list[Note] = field(default_factory=list)


def render_voice(sf2: bytes | str, voice: Voice, frames: int, rate: int = RATE) -> np.ndarray:
    """(2, frames) float32: `voice` alone on a fresh synthesizer (so no state leaks between stems)."""
    import tinysoundfont

    synth = tinysoundfont.Synth(samplerate=rate)
    sfid = synth.sfload(sf2)
    synth.program_select(0, sfid, 0, voice.program)
    synth.control_change(0, 10, voice.pan)
    events = []  # (frame, 0 = off before 1 = on at the same frame, key, velocity)
    for n in voice.notes:
        on = round(n.start * rate)
        events.append((on, 1, n.key, n.velocity))
        events.append((max(on + 1, round((n.start + n.duration) * rate)), 0, n.key, 0))
    events.sort()
    out = np.zeros((frames, 2), dtype=np.float32)
    pos = 0
    for frame, kind, key, velocity in events:
        frame = min(frame, frames)
        if frame > pos:
            out[pos:frame] = np.frombuffer(synth.generate(frame - pos), dtype=np.float32).reshape(-1, 2)
            pos = frame
        if kind:
            synth.noteon(0, key, velocity)
        else:
            synth.noteoff(0, key)
    if frames > pos:
        out[pos:] = np.frombuffer(synth.generate(frames - pos), dtype=np.float32).reshape(-1, 2)
    return out.T.copy()


def render_track(sf2: bytes | str, voices: list[Voice], rate: int = RATE) -> dict[str, np.ndarray]:
    """{stem: (2, frames)} plus "mixture" = their sum, all scaled by one gain (mixture peak at -2 dB)."""
    end = max((n.start + n.duration for v in voices for n in v.notes), default=0.0)
    frames = round((end + TAIL_S) * rate)
    stems: dict[str, np.ndarray] = {}
    for voice in voices:
        x = render_voice(sf2, voice, frames, rate).astype(np.float64)
        stems[voice.stem] = stems[voice.stem] + x if voice.stem in stems else x
    mixture = sum(stems.values())
    gain = PEAK / max(float(np.abs(mixture).max()), 1e-9)
    return {"mixture": mixture * gain} | {s: x * gain for s, x in stems.items()}


def score_voices(score, tempo_bpm: float, rng: np.random.Generator) -> list[Voice]:
    """A music21 SATB score -> Voices (ties merged, chords played whole, rests skipped, repeats not
    expanded; velocity from the score or 80, +-8 seeded), programs drawn per role from PROGRAMS."""
    spq = 60.0 / tempo_bpm  # seconds per quarter note
    voices = []
    for part in score.parts:
        role = _role(part)
        flat = part.stripTies().flatten()
        notes = []
        for n in flat.notes:
            base = n.volume.velocity if n.volume.velocity is not None else 80
            velocity = int(np.clip(base + rng.integers(-8, 9), 1, 127))
            for p in n.pitches:
                notes.append(Note(float(n.offset) * spq, float(n.quarterLength) * spq, int(p.midi), velocity))
        program = int(rng.choice(PROGRAMS[role]))
        voices.append(Voice(role, VOICE_STEM[role], program, PAN[role], notes))
    return voices


def _role(part) -> str:
    """soprano/alto/tenor/bass from the part's name ("Soprano", "S.", "Basso", ...)."""
    name = (part.partName or part.id or "").lower()
    for role in VOICE_STEM:
        if role in name:
            return role
    for role in VOICE_STEM:
        if name.startswith(role[0]):
            return role
    raise ValueError(f"part {part.partName!r} is not soprano/alto/tenor/bass")


def is_satb(score) -> bool:
    """Four parts named soprano, alto, tenor, bass (in some spelling), each with notes."""
    if len(score.parts) != 4:
        return False
    try:
        roles = [_role(p) for p in score.parts]
    except ValueError:
        return False
    return sorted(roles) == sorted(VOICE_STEM) and all(len(p.flatten().notes) for p in score.parts)


def write_track(folder: Path, signals: dict[str, np.ndarray], rate: int = RATE) -> dict[str, str]:
    """FLAC (24-bit) per signal; returns {name: sha256}. Rewritten only when the bytes differ."""
    import soundfile as sf

    folder.mkdir(parents=True, exist_ok=True)
    digests = {}
    for name, x in signals.items():
        buf = io.BytesIO()
        sf.write(buf, np.clip(x.T, -1, 1), rate, format="FLAC", subtype="PCM_24")
        data = buf.getvalue()
        path = folder / f"{name}.flac"
        if not (path.is_file() and path.read_bytes() == data):
            path.write_bytes(data)
        digests[name] = hashlib.sha256(data).hexdigest()
    return digests


def music21_wheel(dl: Downloads) -> Path:
    """The music21 wheel (pip download, cached); its members are checked against RECORD when read."""
    where = dl.dir / "pypi"
    pattern = f"music21-{MUSIC21_VERSION}-*.whl"
    if not sorted(where.glob(pattern)):
        log("download", f"pip download music21=={MUSIC21_VERSION} --no-deps ...")
        cmd = [sys.executable, "-m", "pip", "download", f"music21=={MUSIC21_VERSION}", "--no-deps"]
        subprocess.run([*cmd, "--only-binary", ":all:", "-d", str(where)], check=True)
    wheel = sorted(where.glob(pattern))[0]
    dl._note(wheel, "music21 (PyPI)", MUSIC21_VERSION, sha256_file(wheel), "RECORD per member")
    return wheel


def _package_license(dist: str) -> str:
    from importlib.metadata import metadata

    meta = metadata(dist)
    licences = [c.rsplit(" :: ", 1)[-1] for c in meta.get_all("Classifier") or [] if c.startswith("License")]
    return meta.get("License-Expression") or meta.get("License") or ", ".join(licences) or "see its metadata"


def _soundfont_license(deb: DebFile) -> str:
    """The copyright file is not DEP-5: quote its licence sentence when it is there."""
    text = deb.read(f"./usr/share/doc/{SOUNDFONT.package}/copyright").decode(errors="replace")
    if "release Fluid under the MIT license" in text:
        return "MIT (Frank Wen, Toby Smithe; /usr/share/doc/fluid-soundfont-gm/copyright)"
    return deb.copyright_license(SOUNDFONT.package, "FluidR3_GM.sf2")


def build(out: Path, downloads: Path, tracks: int, seed: int, test_every: int = 5) -> list[dict]:
    """Fetch, render and write `tracks` chorales under `out`; returns the MANIFEST rows."""
    from music21 import converter

    dl = Downloads(downloads, allow_newer=False)
    deb_path, deb_version = dl.deb(SOUNDFONT)
    deb = DebFile(deb_path)
    sf2 = deb.read(SF2_MEMBER)
    wheel = music21_wheel(dl)
    members = wheel_members(wheel, "music21/corpus/bach/bwv*.mxl")
    names = sorted(members, key=lambda n: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)])
    (out / "scores").mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    seen: set[str] = set()  # a chorale's other versions (bwv18.5-lz, bwv18.5-w) would leak across splits
    for name in names:
        if len(rows) == tracks:
            break
        base = Path(name).stem.split("-")[0]
        if base in seen:
            continue
        data = members[name]
        score_path = out / "scores" / Path(name).name
        if not (score_path.is_file() and score_path.read_bytes() == data):
            score_path.write_bytes(data)
        score = converter.parse(str(score_path))
        if not is_satb(score):
            continue
        seen.add(base)
        track = Path(name).stem.replace(".", "_")
        rng = np.random.default_rng([seed, int(hashlib.sha256(data).hexdigest()[:8], 16)])
        tempo = float(rng.integers(66, 101))
        voices = score_voices(score, tempo, rng)
        signals = render_track(sf2, voices)
        split = "test" if len(rows) % test_every == test_every - 1 else "train"
        digests = write_track(out / split / track, signals)
        rows.append(
            {
                "split": split,
                "track": track,
                "score": Path(name).name,
                "score_sha256": hashlib.sha256(data).hexdigest(),
                "tempo_bpm": int(tempo),
                "programs": ",".join(f"{v.name}={v.program}" for v in voices),
                "seconds": f"{signals['mixture'].shape[1] / RATE:.2f}",
            }
            | {f"{s}_sha256": digests[s] for s in ("mixture", *STEMS)}
        )
        log("stems", f"{split}/{track}: {rows[-1]['seconds']} s at {int(tempo)} bpm, {rows[-1]['programs']}")
    write_tsv(out / "MANIFEST.tsv", list(rows[0]), rows)
    sources = {
        "soundfont": {
            "package": f"Debian {SOUNDFONT.package}",
            "version": deb_version,
            "deb_sha256": SOUNDFONT.sha256,
            "file": SF2_MEMBER.lstrip("."),
            "file_sha256": hashlib.sha256(sf2).hexdigest(),
            "license": _soundfont_license(deb),
        },
        "scores": {
            "package": "PyPI music21 (corpus/bach, J. S. Bach chorales; the music is public domain)",
            "version": MUSIC21_VERSION,
            "wheel": wheel.name,
            "wheel_sha256": sha256_file(wheel),
            "license": _package_license("music21"),
        },
        "renderer": {
            "package": "PyPI tinysoundfont (TinySoundFont, SoundFont 2 synthesis in C)",
            "version": TINYSOUNDFONT_VERSION,
            "license": _package_license("tinysoundfont"),
        },
        "seed": seed,
        "rate": RATE,
        "stems": {"vocals": "soprano", "other": "alto + tenor", "bass": "bass"},
    }
    (out / "SOURCES.json").write_text(json.dumps(sources, indent=2) + "\n")
    return rows


def main(argv: list[str] | None = None) -> int:
    raw = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    parser.add_argument("--out", type=Path, default=Path("data/stems"), help="output root")
    parser.add_argument("--downloads", type=Path, default=Path("data"), help="where downloads/ is cached")
    parser.add_argument("--tracks", type=int, default=20, help="chorales to render (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of tempi, instruments, velocities")
    args = parser.parse_args(argv)
    rows = build(args.out, args.downloads, args.tracks, args.seed)
    seconds = sum(float(r["seconds"]) for r in rows)
    log("stems", f"{len(rows)} tracks, {seconds / 60:.1f} min of audio under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
