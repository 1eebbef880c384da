"""Fetch real photographs and music from package archives into data/, and regenerate the bundled samples.

Codecs are trained and validated on real signals, and the default job needs a corpus that works offline,
so everything here comes from two archives this project can always reach: PyPI (scikit-image's bundled
photos, read straight out of the wheel) and Debian (wallpaper and game-music packages, read straight out
of the .deb; nothing is installed). Every download is checked by sha256: Debian packages against the
values pinned in this script and the archive's signed index, the wheel against its pinned value and every
member against the wheel's RECORD. Nothing here is needed at test time.

Layout written under --out (default data/, git-ignored):

    downloads/                  the cached .deb and .whl files (reused on the next run)
    DOWNLOADS.tsv               what was downloaded: package, version, bytes, sha256, how it was checked
    photos/<source>/<name>      original image files, byte for byte, plus photos/MANIFEST.tsv
    music/<source>/<name>       original music files, byte for byte, plus music/MANIFEST.tsv
    imagenet-mini/              train/<wnid>/*.JPEG and val/<wnid>/*.JPEG: seeded crops of the photos,
                                LOC_synset_mapping.txt and CROPS.tsv (where every crop came from)
    colour/                     train/*.jpg and val/*.jpg: seeded crops of the colour photographs and of
                                Stellarium's colour astrophotos, split by source image, and CROPS.tsv
                                (--steps colour; the colorization job's default data)

--bundle regenerates the small committed corpus in pipeline/samples/ (images from scikit-image only,
audio clips from Wesnoth's music), deterministically, so anyone can see how it was made.

Requires apt-get (Debian/Ubuntu, after `apt-get update`) and pip; audio needs the `data` extra
(soundfile, which ships libsndfile with Vorbis, MP3 and FLAC support).
"""

from __future__ import annotations

import argparse
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from base64 import urlsafe_b64encode
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "pipeline" / "samples"

# ---------------------------------------------------------------------------------------------------------
# Sources, pinned. A newer archive version is used only with --allow-newer (and then reported).


@dataclass(frozen=True)
class Deb:
    package: str
    version: str
    sha256: str  # of the .deb, as in Debian bookworm's index


PLASMA = Deb(
    "plasma-workspace-wallpapers",
    "4:5.27.5-2",
    "32cd18b71c8c938a18b3b351f217c02ac590e323caa3cf322fbb875ce8892f8b",
)
MATE = Deb("mate-backgrounds", "1.26.0-1", "7bf4c2209f34b4f61ba6d24c8b58c28b361e82e4b943aae6d42c030169af9e04")
LOMIRI16 = Deb(
    "lomiri-wallpapers-16.04", "20.04.0-2", "a99ff6a3bfe451e4cc0682ecb3cc82e71740626d59e4845ae34a0a0e45421eab"
)
LOMIRI20 = Deb(
    "lomiri-wallpapers-20.04", "20.04.0-2", "d44e89b8473aafe64a5b678f014862dc31335aaaf18665c544d985d854f1a709"
)
WESNOTH = Deb(
    "wesnoth-1.16-music", "1:1.16.9-1", "f9bc3cde92b4ab30db5d7b85f89b4bcc3d788dd92602956d0347250850bf59bb"
)
ASC = Deb("asc-music", "1.3-6", "369f2d396adb8db9003ef73b797d529e284a7764a5ff4b59a50a4c8b9294da5f")
STELLARIUM = Deb(
    "stellarium-data", "0.22.2-1", "45aaebf39a814acbd6dcccea058c2f5651bcb5635599da03a215feeb51f4d5a5"
)

SKIMAGE_VERSION = "0.26.0"
SKIMAGE_WHEEL_SHA256 = {  # other platforms' wheels carry the same data files; their hash is printed
    "scikit_image-0.26.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl": (
        "74aa5518ccea28121f57a95374581d3b979839adc25bb03f289b1bc9b99c58af"
    ),
}

# scikit-image's bundled images: kind and the licence its docstring gives (skimage/data/_fetchers.py).
SKIMAGE_IMAGES: dict[str, tuple[str, str]] = {
    "astronaut.png": ("photo", "public domain (NASA Great Images)"),
    "brick.png": ("photo", "CC0 (cc0textures.com, Bricks25)"),
    "camera.png": ("photo", "CC0 (photographer Lav Varshney)"),
    "cell.png": ("photo", "CC0 (microscopy)"),
    "chelsea.png": ("photo", "CC0 (photographer Stefan van der Walt)"),
    "clock_motion.png": ("photo", "public domain (photographer Stefan van der Walt)"),
    "coffee.png": ("photo", "CC0 (photographer Rachel Michetti)"),
    "coins.png": ("photo", "no known copyright restrictions (Brooklyn Museum)"),
    "color.png": ("synthetic", "scikit-image, BSD-3-Clause (colour wheel)"),
    "grass.png": ("photo", "CC0 (cc0textures.com)"),
    "gravel.png": ("photo", "CC0 (cc0textures.com, Gravel04)"),
    "hubble_deep_field.jpg": ("photo", "public domain (NASA)"),
    "ihc.png": ("photo", "no known copyright restrictions (CMMI)"),
    "logo.png": ("synthetic", "scikit-image logo, BSD-3-Clause"),
    "moon.png": ("photo", "distributed with scikit-image, BSD-3-Clause (provenance undocumented)"),
    "motorcycle_left.png": ("photo", "Middlebury 2014 stereo benchmark (Scharstein et al.; cite it)"),
    "motorcycle_right.png": ("photo", "Middlebury 2014 stereo benchmark (Scharstein et al.; cite it)"),
    "page.png": ("document", "distributed with scikit-image, BSD-3-Clause (provenance undocumented)"),
    "retina.jpg": ("photo", "CC0 (Wikimedia Commons, fundus photograph)"),
    "rocket.jpg": ("photo", "public domain (SpaceX)"),
    "text.png": ("document", "public domain (Wikipedia, File:Corner.png)"),
}

# Plasma ships photographs and rendered artwork; all are kept, but only photos feed imagenet-mini.
PLASMA_PHOTOS = {
    "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf",
    "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
}  # fmt: skip
MATE_PHOTOS = "./usr/share/backgrounds/mate/nature/*.jpg"  # the other MATE folders are artwork
LOMIRI16_PHOTOS = {
    "Bridge_by_Sander_Klootwijk", "Dragonfly_by_Bolly", "Picture_0B_by_freespace", "Picture_1A_by_freespace",
    "Wine_by_Jakkub_Mede", "aitzgorri_by_Aitzol_Berasategi", "free_by_Peter_Nerlich",
    "friends_by_Aitzol_Berasategi", "greentock_by_Peter_Nerlich", "life_by_Aitzol_Berasategi",
    "picosdeeuropa_by_Aitzol_Berasategi", "seeding_by_Clements_Engelhardt", "sunset_by_Aitzol_Berasategi",
}  # fmt: skip
LOMIRI20_PHOTOS = {"Kleiber_by_Lukas_Baubkus"}

STELLARIUM_NEBULAE = "./usr/share/stellarium/nebulae/default/*"  # astrophotos of deep-sky objects

WESNOTH_MUSIC = "./usr/share/games/wesnoth/1.16/data/core/music/*.ogg"
ASC_MUSIC = "./usr/share/games/asc/music/*.mp3"

# ImageNet-style pseudo-classes: each groups whole source photos (data/photos/<source>/<stem>).
CLASSES: list[tuple[str, str, list[str]]] = [
    ("n00000001", "flower, bloom, blossom",
     ["mate/FreshFlower", "mate/Garden", "mate/YellowFlower", "mate/TwoWings", "mate/LadyBird",
      "lomiri/seeding_by_Clements_Engelhardt"]),
    ("n00000002", "foliage, meadow, forest path",
     ["mate/Blinds", "mate/GreenMeadow", "mate/RainDrops", "plasma/Path", "plasma/OneStandsOut",
      "plasma/FallenLeaf", "lomiri/Dragonfly_by_Bolly"]),
    ("n00000003", "lakeside, lakeshore, seashore",
     ["plasma/BytheWater", "plasma/ColdRipple", "plasma/DarkestHour", "plasma/EveningGlow",
      "plasma/summer_1am", "mate/Aqua", "mate/Storm"]),
    ("n00000004", "texture: brick, gravel, grass, sand, wood",
     ["skimage/brick", "skimage/gravel", "skimage/grass", "mate/Wood", "mate/Dune", "plasma/Grey"]),
    ("n00000005", "sky, outer space, spacecraft",
     ["skimage/hubble_deep_field", "skimage/moon", "skimage/rocket", "skimage/astronaut", "plasma/Kite",
      "lomiri/Bridge_by_Sander_Klootwijk"]),
    ("n00000006", "mountain, valley, alp",
     ["lomiri/aitzgorri_by_Aitzol_Berasategi", "lomiri/picosdeeuropa_by_Aitzol_Berasategi",
      "lomiri/life_by_Aitzol_Berasategi", "lomiri/sunset_by_Aitzol_Berasategi"]),
    ("n00000007", "cat, dog, bird",
     ["skimage/chelsea", "lomiri/friends_by_Aitzol_Berasategi", "lomiri/Kleiber_by_Lukas_Baubkus"]),
    ("n00000008", "household object, tool, vehicle",
     ["skimage/coffee", "skimage/coins", "skimage/camera", "skimage/motorcycle_left",
      "skimage/motorcycle_right", "plasma/ColorfulCups", "lomiri/Picture_0B_by_freespace",
      "lomiri/Picture_1A_by_freespace", "lomiri/Wine_by_Jakkub_Mede", "lomiri/free_by_Peter_Nerlich",
      "lomiri/greentock_by_Peter_Nerlich"]),
    ("n00000009", "micrograph, fundus photograph",
     ["skimage/retina", "skimage/ihc", "skimage/cell"]),
]  # fmt: skip

# The committed sample corpus: scikit-image photos only (public domain / CC0), 4 classes x 6 crops.
BUNDLE_IMAGE_CLASSES = ["n00000004", "n00000005", "n00000008", "n00000009"]
BUNDLE_IMAGES_PER_CLASS = 6
BUNDLE_CROP = (256, 448)  # crop side range in pixels; keeps the 24 JPEGs (q90) well under 1.5 MB
BUNDLE_AUDIO = [("knolls", 60.0), ("traveling_minstrels", 30.0), ("northerners", 30.0)]  # track, start s
BUNDLE_AUDIO_SECONDS = 8.0
BUNDLE_SEED = 20240501

TSV_SOURCE = ["file", "package", "version", "source_path"]
TSV_PHOTOS = [*TSV_SOURCE, "kind", "width", "height", "bytes", "sha256", "license"]
TSV_MUSIC = [*TSV_SOURCE, "seconds", "sample_rate", "channels", "bytes", "sha256", "license"]


def log(step: str, msg: str) -> None:
    print(f"[{step}] {msg}", flush=True)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write only when the bytes differ, so reruns are cheap and leave git and mtimes alone."""
    if path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    tmp.replace(path)
    return True


def write_tsv(path: Path, header: list[str], rows: list[dict]) -> None:
    lines = ["\t".join(header)] + ["\t".join(str(r[k]) for k in header) for r in rows]
    write_if_changed(path, ("\n".join(lines) + "\n").encode())


def read_tsv(path: Path) -> list[dict[str, str]]:
    header, *lines = path.read_text().splitlines()
    keys = header.split("\t")
    return [dict(zip(keys, line.split("\t"), strict=True)) for line in lines]


# ---------------------------------------------------------------------------------------------------------
# Downloads


class Downloads:
    """The download cache plus DOWNLOADS.tsv, the record of what was fetched and how it was checked."""

    def __init__(self, out: Path, allow_newer: bool) -> None:
        self.dir = out / "downloads"
        self.record = out / "DOWNLOADS.tsv"
        self.allow_newer = allow_newer
        self.rows: dict[str, dict] = {}
        if self.record.is_file():
            self.rows = {r["file"]: r for r in read_tsv(self.record)}

    def _note(self, path: Path, package: str, version: str, digest: str, checked: str) -> None:
        self.rows[path.name] = dict(
            file=path.name,
            package=package,
            version=version,
            bytes=path.stat().st_size,
            sha256=digest,
            checked=checked,
        )
        keys = ["file", "package", "version", "bytes", "sha256", "checked"]
        write_tsv(self.record, keys, sorted(self.rows.values(), key=lambda r: r["file"]))

    def deb(self, deb: Deb) -> tuple[Path, str]:
        """The .deb of `deb` (downloaded once) and the version actually used; sha256 checked."""
        index = _apt_index_record(deb.package, deb.version)
        version, expected = deb.version, deb.sha256
        if index is None:
            newest = _apt_index_record(deb.package, None)
            if newest is None:
                sys.exit(f"apt knows no package {deb.package!r}: run `apt-get update` (Debian bookworm)")
            if not self.allow_newer:
                sys.exit(
                    f"{deb.package} {deb.version} is no longer in the apt index (it has {newest['Version']});"
                    " rerun with --allow-newer to use it (the outputs will then differ)"
                )
            version, expected = newest["Version"], newest["SHA256"]
            log("download", f"WARNING: {deb.package}: pinned {deb.version} missing, using {version}")
        elif index["SHA256"] != deb.sha256:
            sys.exit(
                f"{deb.package} {deb.version}: apt index sha256 {index['SHA256']} != pinned {deb.sha256}"
            )

        where = self.dir / "debs" / deb.package
        where.mkdir(parents=True, exist_ok=True)
        for old in where.glob("*.deb"):
            if sha256_file(old) == expected:
                log("download", f"{old.name}: cached, sha256 {expected} ok")
                self._note(old, deb.package, version, expected, "pinned + apt index")
                return old, version
            old.unlink()
        log("download", f"apt-get download {deb.package}={version} ...")
        proc = subprocess.run(
            ["apt-get", "download", f"{deb.package}={version}"], cwd=where, capture_output=True, text=True
        )
        debs = list(where.glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            sys.exit(f"apt-get download {deb.package}={version} failed:\n{proc.stdout}{proc.stderr}")
        digest = sha256_file(debs[0])
        if digest != expected:
            debs[0].unlink()
            sys.exit(f"{deb.package}: downloaded sha256 {digest} != expected {expected}")
        log("download", f"{debs[0].name}: {debs[0].stat().st_size / 1e6:.1f} MB, sha256 {digest} ok")
        self._note(debs[0], deb.package, version, digest, "pinned + apt index")
        return debs[0], version

    def skimage_wheel(self) -> Path:
        """scikit-image's wheel (downloaded once with pip); sha256 checked where pinned, always printed."""
        where = self.dir / "pypi"
        wheels = sorted(where.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
        if not wheels:
            log("download", f"pip download scikit-image=={SKIMAGE_VERSION} --no-deps ...")
            cmd = [sys.executable, "-m", "pip", "download", f"scikit-image=={SKIMAGE_VERSION}", "--no-deps"]
            subprocess.run([*cmd, "--only-binary", ":all:", "-d", str(where)], check=True)
            wheels = sorted(where.glob(f"scikit_image-{SKIMAGE_VERSION}-*.whl"))
        wheel = wheels[0]
        digest = sha256_file(wheel)
        expected = SKIMAGE_WHEEL_SHA256.get(wheel.name)
        if expected is not None and digest != expected:
            wheel.unlink()
            sys.exit(f"{wheel.name}: sha256 {digest} != pinned {expected}")
        checked = "pinned + RECORD" if expected else "RECORD only (no pin for this platform's wheel)"
        log("download", f"{wheel.name}: sha256 {digest} ({checked})")
        self._note(wheel, "scikit-image (PyPI)", SKIMAGE_VERSION, digest, checked)
        return wheel


def _apt_index_record(package: str, version: str | None) -> dict[str, str] | None:
    """The apt index's record for package=version (or its candidate): Version, SHA256, Size..."""
    spec = package if version is None else f"{package}={version}"
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", spec], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0 or not proc.stdout.strip():
        return None
    fields = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields[key] = value
    return fields


# ---------------------------------------------------------------------------------------------------------
# Reading packages without installing them


class DebFile:
    """A .deb opened in memory: its files (checked against the package's md5sums) and copyright."""

    def __init__(self, path: Path) -> None:
        members = _ar_members(path.read_bytes())
        data_name = next(n for n in members if n.startswith("data.tar"))
        control_name = next(n for n in members if n.startswith("control.tar"))
        with tarfile.open(fileobj=io.BytesIO(_decompress(data_name, members.pop(data_name)))) as tar:
            self._files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
        with tarfile.open(fileobj=io.BytesIO(_decompress(control_name, members[control_name]))) as tar:
            md5sums = tar.extractfile("./md5sums").read().decode()
        self._md5 = {}
        for line in md5sums.splitlines():
            digest, name = line.split(maxsplit=1)
            self._md5["./" + name] = digest
        self.files = sorted(self._files)

    def read(self, name: str) -> bytes:
        data = self._files[name]
        expected = self._md5.get(name)
        if expected is not None and hashlib.md5(data).hexdigest() != expected:
            raise ValueError(f"{name}: md5 does not match the package's md5sums")
        return data

    def glob(self, pattern: str) -> list[str]:
        return sorted(n for n in self.files if fnmatch.fnmatch(n, pattern))

    def copyright_license(self, package: str, name: str) -> str:
        """The licence of installed file `name` per the package's DEP-5 copyright, else a pointer to it."""
        path = f"./usr/share/doc/{package}/copyright"
        found = f"see /usr/share/doc/{package}/copyright"
        if path not in self.files:
            return found
        for para in self.read(path).decode(errors="replace").split("\n\n"):
            fields = _dep5_fields(para)
            patterns = fields.get("Files", "").split() if "License" in fields else []
            if any(_dep5_match(pattern, name) for pattern in patterns):
                holder = fields.get("Copyright", "").splitlines()[0] if fields.get("Copyright") else ""
                found = f"{fields['License'].splitlines()[0]} ({holder})" if holder else fields["License"]
        return found  # DEP-5: the last matching paragraph wins


def _dep5_match(pattern: str, installed: str) -> bool:
    """Whether a DEP-5 `Files:` pattern (a path in the upstream tree) covers an installed file.

    Upstream folders rarely survive installation, so a literal file name matches by name alone; a
    wildcard pattern (`debian/*`, `nature/*.jpg`) needs its folder to appear in the installed path.
    """
    if pattern == "*":
        return True
    folder, _, base = pattern.rpartition("/")
    if not fnmatch.fnmatch(installed.rsplit("/", 1)[-1], base):
        return False
    return not any(c in base for c in "*?[") or (bool(folder) and f"/{folder}/" in installed)


def _dep5_fields(paragraph: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    key = None
    for line in paragraph.splitlines():
        if line.startswith((" ", "\t")) and key is not None:
            fields[key] += "\n" + line.strip()
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return {k: v.strip() for k, v in fields.items()}


def _decompress(name: str, blob: bytes) -> bytes:
    """Decompress a .deb member once, so reading its files in any order does not re-inflate the stream."""
    if name.endswith(".xz"):
        return lzma.decompress(blob)
    if name.endswith(".gz"):
        return gzip.decompress(blob)
    if name.endswith(".tar"):
        return blob
    raise ValueError(f"unsupported .deb member compression: {name} (use a Python with zstd, or dpkg-deb)")


def _ar_members(blob: bytes) -> dict[str, bytes]:
    """The members of an ar archive (the container format of a .deb)."""
    if not blob.startswith(b"!<arch>\n"):
        raise ValueError("not a .deb (ar) archive")
    members, pos = {}, 8
    while pos + 60 <= len(blob):
        header = blob[pos : pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = blob[pos + 60 : pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def wheel_members(wheel: Path, pattern: str) -> dict[str, bytes]:
    """Files of `wheel` matching `pattern`, each checked against the wheel's RECORD sha256."""
    with zipfile.ZipFile(wheel) as z:
        record_name = next(n for n in z.namelist() if n.endswith(".dist-info/RECORD"))
        record = {}
        for line in z.read(record_name).decode().splitlines():
            name, digest, _size = line.rsplit(",", 2)
            record[name] = digest
        out = {}
        for name in sorted(z.namelist()):
            if fnmatch.fnmatch(name, pattern) and not name.endswith("/"):
                data = z.read(name)
                b64 = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
                if record.get(name) != f"sha256={b64}":
                    raise ValueError(f"{wheel.name}:{name}: sha256 does not match RECORD")
                out[name] = data
        return out


# ---------------------------------------------------------------------------------------------------------
# Steps


def step_photos(out: Path, dl: Downloads) -> None:
    """Original photographs (and Plasma's artwork), byte for byte, with MANIFEST.tsv."""
    dest = out / "photos"
    rows: list[dict] = []

    def keep(rel: str, data: bytes, package: str, version: str, src: str, kind: str, lic: str) -> None:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size
        changed = write_if_changed(dest / rel, data)
        log("photos", f"{'wrote' if changed else 'kept '} {rel} ({width}x{height}, {len(data) / 1e6:.2f} MB)")
        rows.append(
            dict(
                file=rel,
                package=package,
                version=version,
                source_path=src,
                kind=kind,
                width=width,
                height=height,
                bytes=len(data),
                sha256=sha256_bytes(data),
                license=lic,
            )
        )

    wheel = dl.skimage_wheel()
    files = wheel_members(wheel, "skimage/data/*")
    for name, (kind, lic) in SKIMAGE_IMAGES.items():
        src = f"skimage/data/{name}"
        keep(f"skimage/{name}", files[src], "scikit-image (PyPI)", SKIMAGE_VERSION, src, kind, lic)

    path, version = dl.deb(PLASMA)
    deb = DebFile(path)
    largest: dict[str, tuple[int, str]] = {}  # wallpaper -> (pixels, member); the rest are downscales
    for name in deb.glob("./usr/share/wallpapers/*/contents/images/*"):
        m = re.search(r"/wallpapers/([^/]+)/contents/images/(\d+)x(\d+)\.(jpg|png)$", name)
        if m and (m[1] not in largest or int(m[2]) * int(m[3]) > largest[m[1]][0]):
            largest[m[1]] = (int(m[2]) * int(m[3]), name)
    for wallpaper, (_, name) in sorted(largest.items()):
        lic = _plasma_license(deb, wallpaper)
        kind = "photo" if wallpaper in PLASMA_PHOTOS else "artwork"
        ext = name.rsplit(".", 1)[-1]
        keep(f"plasma/{wallpaper}.{ext}", deb.read(name), PLASMA.package, version, name, kind, lic)

    for pkg, subdir, pattern, names in [
        (MATE, "mate", MATE_PHOTOS, None),
        (LOMIRI16, "lomiri", "./usr/share/backgrounds/*.jpg", LOMIRI16_PHOTOS),
        (LOMIRI20, "lomiri", "./usr/share/backgrounds/*.jpg", LOMIRI20_PHOTOS),
    ]:
        path, version = dl.deb(pkg)
        deb = DebFile(path)
        for name in deb.glob(pattern):
            base = name.rsplit("/", 1)[-1]
            if names is None or base.rsplit(".", 1)[0] in names:
                lic = deb.copyright_license(pkg.package, name)
                keep(f"{subdir}/{base}", deb.read(name), pkg.package, version, name, "photo", lic)

    write_tsv(dest / "MANIFEST.tsv", TSV_PHOTOS, rows)
    total = sum(r["bytes"] for r in rows)
    photos = sum(r["kind"] == "photo" for r in rows)
    log("photos", f"{len(rows)} files ({photos} photographs), {total / 1e6:.1f} MB -> {dest}/MANIFEST.tsv")


def _plasma_license(deb: DebFile, wallpaper: str) -> str:
    """Licence and author from the wallpaper's metadata.json (or the older metadata.desktop)."""
    root = f"./usr/share/wallpapers/{wallpaper}"
    if f"{root}/metadata.json" in deb.files:
        meta = json.loads(deb.read(f"{root}/metadata.json"))["KPlugin"]
        return f"{meta.get('License', 'GPL-2+')} ({meta['Authors'][0]['Name']})"
    desktop = dict(
        line.split("=", 1)
        for line in deb.read(f"{root}/metadata.desktop").decode().splitlines()
        if "=" in line
    )
    return (
        f"{desktop.get('X-KDE-PluginInfo-License', 'GPL-2+')} ({desktop.get('X-KDE-PluginInfo-Author', '?')})"
    )


def step_music(out: Path, dl: Downloads) -> None:
    """Original music files, byte for byte, with MANIFEST.tsv (durations need soundfile)."""
    try:
        import soundfile
    except ImportError:
        soundfile = None
        log("music", "soundfile not installed (pip install -e '.[data]'): durations left blank")
    dest = out / "music"
    rows: list[dict] = []
    for pkg, subdir, pattern, lic in [
        (WESNOTH, "wesnoth", WESNOTH_MUSIC, "GPL-2+ (The Battle for Wesnoth project)"),
        (ASC, "asc", ASC_MUSIC, "GPL-2+ (Michael Kievernagel)"),
    ]:
        path, version = dl.deb(pkg)
        deb = DebFile(path)
        for name in deb.glob(pattern):
            base = name.rsplit("/", 1)[-1]
            data = deb.read(name)
            changed = write_if_changed(dest / subdir / base, data)
            seconds = rate = channels = ""
            if soundfile is not None:
                info = soundfile.info(dest / subdir / base)
                seconds, rate, channels = f"{info.duration:.2f}", info.samplerate, info.channels
            log("music", f"{'wrote' if changed else 'kept '} {subdir}/{base} ({seconds} s)")
            rows.append(
                dict(
                    file=f"{subdir}/{base}",
                    package=pkg.package,
                    version=version,
                    source_path=name,
                    seconds=seconds,
                    sample_rate=rate,
                    channels=channels,
                    bytes=len(data),
                    sha256=sha256_bytes(data),
                    license=lic,
                )
            )
    write_tsv(dest / "MANIFEST.tsv", TSV_MUSIC, rows)
    note = (
        "Real music from Debian packages; see MANIFEST.tsv. No multitrack (MUSDB18-style stems) corpus is\n"
        "packaged in Debian or on PyPI, so none is fetched: stem-separation data must come from elsewhere.\n"
    )
    write_if_changed(dest / "README.txt", note.encode())
    total = sum(r["bytes"] for r in rows)
    log("music", f"{len(rows)} tracks, {total / 1e6:.1f} MB -> {dest}/MANIFEST.tsv")


def random_crop(
    img: Image.Image, rng: np.random.Generator, lo: int, hi: int, max_short: int = 1024
) -> tuple[Image.Image, str]:
    """A crop with sides in [lo, hi] after a random downscale, and a note saying exactly how it was cut.

    Big wallpapers are shrunk first (short side somewhere in [hi, max_short]) so a crop holds a scene,
    as an ImageNet photo does, rather than a few square centimetres of texture.
    """
    w, h = img.size
    short = min(w, h)
    if short < lo:
        raise ValueError(f"image {w}x{h} is smaller than a {lo}-pixel crop")
    if short > hi:
        target = int(rng.integers(hi, min(short, max_short) + 1))
        w, h = round(w * target / short), round(h * target / short)
        if (w, h) != img.size:
            img = img.resize((w, h), Image.Resampling.LANCZOS)
    cw = int(rng.integers(lo, min(hi, w) + 1))
    ch = int(rng.integers(lo, min(hi, h) + 1))
    x = int(rng.integers(0, w - cw + 1))
    y = int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)), f"resize={w}x{h} box={x},{y},{x + cw},{y + ch}"


def jpeg_bytes(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def load_rgb(data: bytes, max_short: int = 1024) -> Image.Image:
    """Decode to RGB and shrink once to at most `max_short` on the short side (crops then resize cheaply)."""
    with Image.open(io.BytesIO(data)) as im:
        img = ImageOps.exif_transpose(im).convert("RGB")  # a camera's rotation flag, applied
    short = min(img.size)
    if short > max_short:
        size = (round(img.width * max_short / short), round(img.height * max_short / short))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def up_to_date(dest: Path, stamp: dict, step: str) -> bool:
    """Whether dest/stamp.json says dest was built from exactly `stamp`; if not, its train/ and val/
    are removed so the step rebuilds them from scratch."""
    stamp_path = dest / "stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == json.loads(json.dumps(stamp)):
        log(step, f"up to date ({dest}); delete {stamp_path.name} to rebuild")
        return True
    for split in ("train", "val"):
        if (dest / split).exists():
            shutil.rmtree(dest / split)
    return False


def write_stamp(dest: Path, stamp: dict) -> None:
    (dest / "stamp.json").write_text(json.dumps(stamp, indent=1) + "\n")


def step_imagenet(out: Path, dl: Downloads, seed: int, n_train: int, n_val: int) -> None:
    """ImageNet-layout pseudo-classes of seeded 256-400 px crops, for loaders that expect ImageNet."""
    photos = out / "photos"
    if not (photos / "MANIFEST.tsv").is_file():
        step_photos(out, dl)
    by_stem = {r["file"].rsplit(".", 1)[0]: r for r in read_tsv(photos / "MANIFEST.tsv")}
    dest = out / "imagenet-mini"
    stamp = dict(
        seed=seed,
        train=n_train,
        val=n_val,
        classes=CLASSES,
        sources={s: by_stem[s]["sha256"] for _, _, srcs in CLASSES for s in srcs},
    )
    if up_to_date(dest, stamp, "imagenet-mini"):
        return

    rows, val_index = [], 0
    for k, (wnid, _, sources) in enumerate(CLASSES):
        rng = np.random.default_rng([seed, k])
        images = {s: load_rgb((photos / by_stem[s]["file"]).read_bytes()) for s in sources}
        for split, count in (("train", n_train), ("val", n_val)):
            for i in range(count):
                src = sources[int(rng.integers(len(sources)))]
                crop, how = random_crop(images[src], rng, 256, 400)
                if split == "train":
                    name = f"{wnid}_{i + 1}.JPEG"
                else:
                    val_index += 1
                    name = f"ILSVRC2012_val_{val_index:08d}.JPEG"
                (dest / split / wnid).mkdir(parents=True, exist_ok=True)
                (dest / split / wnid / name).write_bytes(jpeg_bytes(crop))
                rows.append(dict(file=f"{split}/{wnid}/{name}", source=by_stem[src]["file"], crop=how))
        log("imagenet-mini", f"{wnid}: {n_train} train + {n_val} val crops from {len(sources)} photos")
    mapping = "".join(f"{wnid} {name}\n" for wnid, name, _ in CLASSES)
    write_if_changed(dest / "LOC_synset_mapping.txt", mapping.encode())
    write_tsv(dest / "CROPS.tsv", ["file", "source", "crop"], rows)
    write_stamp(dest, stamp)
    total = sum(p.stat().st_size for p in dest.rglob("*.JPEG"))
    log("imagenet-mini", f"{len(rows)} JPEGs, {len(CLASSES)} classes, {total / 1e6:.1f} MB -> {dest}")


# Colorization corpus: colour photographs only, split by photograph so no val crop shares a photo with train.
COLOUR_MIN_CHROMA = 3.0  # mean |channel - pixel mean| of a 64x64 thumbnail, 0-255: below it, nearly grey
COLOUR_CROPS = {"photo": 24, "astrophoto": 3}  # crops per source image (the astrophotos are small)


def chroma_level(img: Image.Image) -> float:
    """How much colour an image holds: mean absolute deviation of R, G, B from their mean, 64x64 thumbnail."""
    a = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    return float(np.abs(a - a.mean(axis=2, keepdims=True)).mean())


def step_colour(out: Path, dl: Downloads, seed: int) -> None:
    """data/colour/{train,val}/*.jpg: seeded 256-512 px crops of every colour photograph of the photos step
    and of Stellarium's colour astrophotos; every 5th source image (sorted) gives only val crops."""
    photos = out / "photos"
    if not (photos / "MANIFEST.tsv").is_file():
        step_photos(out, dl)
    photo_rows = [r for r in read_tsv(photos / "MANIFEST.tsv") if r["kind"] == "photo"]
    path, version = dl.deb(STELLARIUM)
    dest = out / "colour"
    stamp = dict(
        seed=seed,
        crops=COLOUR_CROPS,
        min_chroma=COLOUR_MIN_CHROMA,
        photos={r["file"]: r["sha256"] for r in photo_rows},
        stellarium=version,
    )
    if up_to_date(dest, stamp, "colour"):  # before the 390 MB package is unpacked
        return
    sources = [(r["file"], "photo", (photos / r["file"]).read_bytes(), r["license"]) for r in photo_rows]
    deb = DebFile(path)
    lic = "see /usr/share/doc/stellarium-data/copyright (section 4: per-image credits; reuse with credit)"
    for name in deb.glob(STELLARIUM_NEBULAE):
        if name.lower().endswith((".png", ".jpg", ".jpeg")):
            sources.append((f"stellarium/{name.rsplit('/', 1)[-1]}", "astrophoto", deb.read(name), lic))
    rows, kept, grey = [], [], 0
    for name, kind, data, licence in sorted(sources):
        img = load_rgb(data)
        if min(img.size) < 256 or chroma_level(img) < COLOUR_MIN_CHROMA:
            grey += 1
            continue
        kept.append((name, kind, img, licence))
    for n, (name, kind, img, licence) in enumerate(kept):
        split = "val" if n % 5 == 4 else "train"
        rng = np.random.default_rng([seed, n])
        stem = name.rsplit(".", 1)[0].replace("/", "_")
        for i in range(COLOUR_CROPS[kind]):
            crop, how = random_crop(img, rng, 256, min(512, *img.size))
            rel = f"{split}/{stem}_{i:02d}.jpg"
            (dest / split).mkdir(parents=True, exist_ok=True)
            (dest / rel).write_bytes(jpeg_bytes(crop, quality=95))
            rows.append(dict(file=rel, source=name, kind=kind, crop=how, license=licence))
    write_tsv(dest / "CROPS.tsv", ["file", "source", "kind", "crop", "license"], rows)
    write_stamp(dest, stamp)
    counts = {s: sum(r["file"].startswith(s) for r in rows) for s in ("train", "val")}
    log(
        "colour",
        f"{len(kept)} colour source images ({grey} nearly grey or < 256 px left out): "
        f"{counts['train']} train + {counts['val']} val crops -> {dest}",
    )


def step_bundle(dl: Downloads, samples: Path) -> None:
    """Regenerate pipeline/samples/ (committed): 20 scikit-image crops and 3 Wesnoth music clips."""
    import soundfile  # the `data` extra

    files = wheel_members(dl.skimage_wheel(), "skimage/data/*")
    names = {wnid: name for wnid, name, _ in CLASSES}
    sources = {wnid: [s for s in srcs if s.startswith("skimage/")] for wnid, _, srcs in CLASSES}
    rows = []
    for k, wnid in enumerate(BUNDLE_IMAGE_CLASSES):
        rng = np.random.default_rng([BUNDLE_SEED, k])
        stems = sources[wnid]
        for i in range(BUNDLE_IMAGES_PER_CLASS):
            stem = stems[i % len(stems)].split("/", 1)[1]  # every source before any repeats
            fname = next(n for n in SKIMAGE_IMAGES if n.rsplit(".", 1)[0] == stem)
            data = files[f"skimage/data/{fname}"]
            crop, how = random_crop(load_rgb(data), rng, *BUNDLE_CROP)
            jpeg = jpeg_bytes(crop)
            rel = f"train/{wnid}/{wnid}_{i + 1}.JPEG"
            write_if_changed(samples / "images" / rel, jpeg)
            rows.append(
                dict(
                    file=rel,
                    source=f"scikit-image {SKIMAGE_VERSION} skimage/data/{fname}",
                    source_sha256=sha256_bytes(data),
                    crop=how,
                    size=f"{crop.width}x{crop.height}",
                    bytes=len(jpeg),
                    sha256=sha256_bytes(jpeg),
                    license=SKIMAGE_IMAGES[fname][1],
                )
            )
    _remove_stale(samples / "images", {r["file"] for r in rows}, "*.JPEG")
    mapping = "".join(f"{wnid} {names[wnid]}\n" for wnid in BUNDLE_IMAGE_CLASSES)
    write_if_changed(samples / "images" / "LOC_synset_mapping.txt", mapping.encode())
    keys = ["file", "size", "bytes", "sha256", "source", "source_sha256", "crop", "license"]
    write_tsv(samples / "images" / "SOURCES.tsv", keys, rows)
    total = sum(r["bytes"] for r in rows)
    log("bundle", f"{len(rows)} images, {total / 1e6:.2f} MB -> {samples / 'images'}")

    path, version = dl.deb(WESNOTH)
    deb = DebFile(path)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for track, start in BUNDLE_AUDIO:
            ogg = Path(tmp) / f"{track}.ogg"
            ogg.write_bytes(deb.read(WESNOTH_MUSIC.replace("*", track)))
            with soundfile.SoundFile(ogg) as f:
                rate = f.samplerate
                f.seek(round(start * rate))
                pcm = f.read(round(BUNDLE_AUDIO_SECONDS * rate), dtype="int16", always_2d=True)
            buf = io.BytesIO()
            soundfile.write(buf, pcm, rate, format="FLAC", subtype="PCM_16")
            rel = f"wesnoth_{track}.flac"
            write_if_changed(samples / "audio" / rel, buf.getvalue())
            rows.append(
                dict(
                    file=rel,
                    seconds=f"{len(pcm) / rate:.3f}",
                    sample_rate=rate,
                    channels=pcm.shape[1],
                    bytes=len(buf.getvalue()),
                    sha256=sha256_bytes(buf.getvalue()),
                    source=f"{WESNOTH.package} {version} {track}.ogg from {start:.1f} s",
                    license="GPL-2+ (The Battle for Wesnoth project)",
                )
            )
            log("bundle", f"{rel}: {len(pcm) / rate:.1f} s from {track}.ogg @ {start:.0f} s")
    _remove_stale(samples / "audio", {r["file"] for r in rows}, "*.flac")
    keys = ["file", "seconds", "sample_rate", "channels", "bytes", "sha256", "source", "license"]
    write_tsv(samples / "audio" / "SOURCES.tsv", keys, rows)
    log("bundle", f"{len(rows)} clips, {sum(r['bytes'] for r in rows) / 1e6:.2f} MB -> {samples / 'audio'}")


def _remove_stale(root: Path, keep: set[str], pattern: str) -> None:
    """Delete generated files a previous bundle had and this one does not (e.g. after a class change)."""
    for path in sorted(root.rglob(pattern)):
        if path.relative_to(root).as_posix() not in keep:
            log("bundle", f"removed stale {path}")
            path.unlink()


# ---------------------------------------------------------------------------------------------------------

STEPS = ("photos", "music", "imagenet-mini", "colour", "bundle")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=REPO / "data", help="output root (default: %(default)s)")
    p.add_argument(
        "--steps",
        nargs="+",
        choices=STEPS,
        default=["photos", "music", "imagenet-mini"],
        help="what to build (default: photos music imagenet-mini)",
    )
    p.add_argument(
        "--bundle",
        action="store_true",
        help="regenerate only the committed samples in pipeline/samples/ (same as --steps bundle)",
    )
    p.add_argument(
        "--samples-dir", type=Path, default=SAMPLES, help="where --bundle writes (default: %(default)s)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="crop seed of imagenet-mini and colour (default: %(default)s)"
    )
    p.add_argument("--train-per-class", type=int, default=40, help="imagenet-mini (default: %(default)s)")
    p.add_argument("--val-per-class", type=int, default=10, help="imagenet-mini (default: %(default)s)")
    p.add_argument(
        "--allow-newer",
        action="store_true",
        help="use the archive's version where a pinned Debian version is gone",
    )
    args = p.parse_args(argv)

    steps = ["bundle"] if args.bundle else args.steps
    out = args.out.resolve()
    dl = Downloads(out, args.allow_newer)
    if "photos" in steps:
        step_photos(out, dl)
    if "music" in steps:
        step_music(out, dl)
    if "imagenet-mini" in steps:
        step_imagenet(out, dl, args.seed, args.train_per_class, args.val_per_class)
    if "colour" in steps:
        step_colour(out, dl, args.seed)
    if "bundle" in steps:
        step_bundle(dl, args.samples_dir.resolve())
    log("done", f"steps: {' '.join(steps)}; downloads recorded in {dl.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
