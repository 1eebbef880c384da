"""scripts/fetch_elpv.py on a tiny synthetic wheel laid out like elpv-dataset's (no network): labels
parsed, images copied byte for byte into both layouts, the split stratified and seeded, RECORD and
the pinned sha256 enforced."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import zipfile
from base64 import urlsafe_b64encode
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fetch():
    spec = importlib.util.spec_from_file_location("fetch_elpv", REPO / "scripts" / "fetch_elpv.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((6, 6), value, dtype=np.uint8), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def _wheel(path: Path, labels: str, images: dict[str, bytes], break_record: bool = False) -> Path:
    files = {"elpv_dataset/data/labels.csv": labels.encode(), "elpv_dataset/__init__.py": b""}
    files |= {f"elpv_dataset/data/images/{n}": b for n, b in images.items()}
    files["elpv_dataset-1.0.0.post1.dist-info/licenses/LICENSE.md"] = b"CC-BY-NC-SA-4.0 text\n"
    record = []
    for name, data in files.items():
        digest = urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        if break_record and name.endswith("cell0001.png"):
            digest = "A" * len(digest)
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("elpv_dataset-1.0.0.post1.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("elpv_dataset-1.0.0.post1.dist-info/RECORD", "\n".join(record) + "\n")
    return path


# 24 cells: 12 functional (6 mono, 6 poly), 4 per other level (2 mono, 2 poly)
PROBS = [0.0] * 12 + [1 / 3] * 4 + [2 / 3] * 4 + [1.0] * 4
TYPES = ["mono", "poly"] * 12


def _labels() -> tuple[str, dict[str, bytes]]:
    lines, images = [], {}
    for i, (p, t) in enumerate(zip(PROBS, TYPES, strict=True), 1):
        name = f"cell{i:04d}.png"
        lines.append(f"images/{name}  {p!r:<20} {t}")
        images[name] = _png(i)
    return "\n".join(lines) + "\n", images


def test_labels_parse_like_the_packages_loader(fetch):
    text, _ = _labels()
    cells = fetch.parse_labels(text)
    assert [c.level for c in cells] == [round(p * 3) for p in PROBS]
    assert [c.binary for c in cells] == ["defective" if p >= 0.5 else "functional" for p in PROBS]
    with pytest.raises(ValueError, match="not k/3"):
        fetch.parse_labels("images/cell0001.png 0.5 mono\n")
    with pytest.raises(ValueError, match="line 1"):
        fetch.parse_labels("images/cell0001.png 0.0 amorphous\n")


def test_split_is_stratified_and_seeded(fetch):
    text, _ = _labels()
    cells = fetch.parse_labels(text)
    split = fetch.stratified_split(cells, 0.5, seed=0)
    for level in range(4):
        for kind in ("mono", "poly"):
            rows = [s for c, s in zip(cells, split, strict=True) if c.level == level and c.type == kind]
            assert rows.count("val") == round(0.5 * len(rows)), (level, kind)
    assert split == fetch.stratified_split(cells, 0.5, seed=0)
    assert any(fetch.stratified_split(cells, 0.5, seed=s) != split for s in range(1, 5))


def test_main_writes_both_layouts_from_the_pinned_wheel(fetch, tmp_path, monkeypatch):
    text, images = _labels()
    wheel = _wheel(tmp_path / "w.whl", text, images)
    dest = tmp_path / "data" / "downloads" / "pypi" / fetch.ELPV_WHEEL
    dest.parent.mkdir(parents=True)
    wheel.rename(dest)
    monkeypatch.setattr(fetch, "ELPV_WHEEL_SHA256", hashlib.sha256(dest.read_bytes()).hexdigest())
    assert fetch.main(["--out", str(tmp_path / "data"), "--val-fraction", "0.5"]) == 0
    root, binary = tmp_path / "data" / "elpv", tmp_path / "data" / "elpv-binary"
    pngs = sorted(root.rglob("*.png"))
    assert len(pngs) == 24 and len(sorted(binary.rglob("*.png"))) == 24
    from fetch_data import read_tsv

    rows = read_tsv(root / "labels.tsv")
    for r in rows:
        name = Path(r["file"]).name
        assert (root / r["file"]).read_bytes() == images[name]  # byte for byte
        assert r["file"].split("/")[1] == fetch.LEVELS[int(r["level"])][0]
        assert (binary / r["split"] / r["binary"] / name).read_bytes() == images[name]
    assert {p.parent.name for p in pngs} == {"p000", "p033", "p067", "p100"}
    assert sum(r["split"] == "val" for r in rows) == 12
    assert "CC-BY-NC-SA-4.0" in (root / "SOURCE.md").read_text()
    assert (binary / "LICENSE.md").read_text() == "CC-BY-NC-SA-4.0 text\n"
    assert "elpv-dataset (PyPI)" in (tmp_path / "data" / "DOWNLOADS.tsv").read_text()
    assert (root / "LOC_synset_mapping.txt").read_text().splitlines()[0] == "p000 functional"


def test_a_wheel_that_is_not_the_pinned_one_is_refused(fetch, tmp_path):
    text, images = _labels()
    dest = tmp_path / "downloads" / "pypi" / fetch.ELPV_WHEEL
    dest.parent.mkdir(parents=True)
    _wheel(dest, text, images)
    with pytest.raises(SystemExit, match="sha256"):
        fetch.main(["--out", str(tmp_path)])
    assert not dest.exists()  # removed, so the next run downloads it again


def test_members_are_checked_against_record_and_labels(fetch, tmp_path):
    from fetch_data import wheel_members

    text, images = _labels()
    bad = _wheel(tmp_path / "bad.whl", text, images, break_record=True)
    with pytest.raises(ValueError, match="RECORD"):
        wheel_members(bad, fetch.DATA_PREFIX + "*")
    del images["cell0003.png"]
    short = _wheel(tmp_path / "short.whl", text, images)
    with pytest.raises(ValueError, match="lacks"):
        fetch.write_dataset(wheel_members(short, fetch.DATA_PREFIX + "*"), tmp_path / "elpv", 0, 0.25)
