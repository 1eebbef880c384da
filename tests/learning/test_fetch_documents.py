"""scripts/fetch_documents.py on a tiny .deb built here (ar + control.tar.gz + data.tar.xz): the PDFs
come out byte for byte under flat unique names, md5-checked against the package's md5sums, with
one MANIFEST row each; a file that is not a PDF is skipped."""

from __future__ import annotations

import hashlib
import importlib.util
import io
import sys
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _script():
    sys.path.insert(0, str(REPO / "scripts"))
    spec = importlib.util.spec_from_file_location("fetch_documents", REPO / "scripts" / "fetch_documents.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tar(files: dict[str, bytes], mode: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode=mode) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _ar(members: dict[str, bytes]) -> bytes:
    out = bytearray(b"!<arch>\n")
    for name, data in members.items():
        out += f"{name:<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(data):<10}`\n".encode() + data
        if len(data) % 2:
            out += b"\n"
    return bytes(out)


def _deb(path: Path, files: dict[str, bytes], md5_override: dict[str, str] | None = None) -> Path:
    md5 = {name: hashlib.md5(data).hexdigest() for name, data in files.items()} | (md5_override or {})
    md5sums = "".join(f"{digest}  {name.removeprefix('./')}\n" for name, digest in md5.items()).encode()
    path.write_bytes(
        _ar(
            {
                "debian-binary": b"2.0\n",
                "control.tar.gz": _tar({"./md5sums": md5sums}, "w:gz"),
                "data.tar.xz": _tar(files, "w:xz"),
            }
        )
    )
    return path


FILES = {
    "./usr/share/doc/texlive-doc/latex/chemfig/chemfig.pdf": b"%PDF-1.5\nchemfig manual",
    "./usr/share/doc/texlive-doc/latex/other/chemfig.pdf": b"%PDF-1.4\nsame base name, other package",
    "./usr/share/doc/texlive-doc/latex/chemfig/README": b"not a pdf at all",
    "./usr/share/doc/texlive-doc/latex/broken/fake.pdf": b"<html>an error page saved as .pdf</html>",
    "./usr/share/doc/texlive-science-doc/copyright": b"Format: unknown\n\nnot DEP-5\n",
}


def test_pdfs_come_out_byte_for_byte_with_rows(tmp_path):
    fetch = _script()
    deb = fetch.DebFile(_deb(tmp_path / "pkg.deb", FILES))
    pkg = fetch.COLLECTIONS["science"]
    rows = fetch.extract_pdfs(deb, "science", pkg, pkg.version, tmp_path / "documents")
    assert [r["file"] for r in rows] == [
        "science/texlive-doc__latex__chemfig__chemfig.pdf",
        "science/texlive-doc__latex__other__chemfig.pdf",
    ]  # the fake PDF is skipped, the README is no PDF; two chemfig.pdf keep apart
    for row in rows:
        data = (tmp_path / "documents" / row["file"]).read_bytes()
        assert data == FILES[row["source_path"]]
        assert row["sha256"] == hashlib.sha256(data).hexdigest() and row["bytes"] == len(data)
        assert row["package"] == "texlive-science-doc" and row["collection"] == "science"
        assert row["license"]  # what the package's copyright says (here: a pointer to it)
    assert set(row) == set(fetch.TSV_DOCUMENTS)


def test_a_file_that_does_not_match_md5sums_is_refused(tmp_path):
    fetch = _script()
    name = "./usr/share/doc/texlive-doc/latex/chemfig/chemfig.pdf"
    deb = fetch.DebFile(_deb(tmp_path / "pkg.deb", FILES, {name: "0" * 32}))
    pkg = fetch.COLLECTIONS["science"]
    with pytest.raises(ValueError, match="md5"):
        fetch.extract_pdfs(deb, "science", pkg, pkg.version, tmp_path / "documents")


def test_every_collection_is_pinned():
    fetch = _script()
    for pkg in fetch.COLLECTIONS.values():
        assert pkg.version and len(pkg.sha256) == 64 and int(pkg.sha256, 16) >= 0
