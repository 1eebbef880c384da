"""Fetch born-digital PDFs from Debian documentation packages into data/documents/.

The document job (jobs/learn_documents.py) needs real pages whose ground truth is exact: PDFs typeset
by TeX or R have a text layer that says which glyph sits where, so rendering a page and reading its
text layer gives pixel-accurate labels without anyone transcribing a scan. Debian ships thousands of
such pages in its documentation packages; each is read straight out of its .deb (sha256 pinned and
checked against the apt index, every file against the package's md5sums; nothing is installed), with
the download and .deb helpers of scripts/fetch_data.py.

Collections (one Debian package each; the collection is also the page-type label):

    science      texlive-science-doc     manuals of LaTeX packages for science (maths, chemistry, physics)
    humanities   texlive-humanities-doc  manuals of LaTeX packages for the humanities (linguistics, drama)
    r-manuals    r-doc-pdf               the R manuals (R-intro, R-exts, R-lang, ...)

Layout written under --out (default data/, git-ignored):

    downloads/                          the cached .deb files (shared with fetch_data.py)
    documents/<collection>/<name>.pdf   the PDFs, byte for byte (name: the installed path, '/' -> '__')
    documents/MANIFEST.tsv              per PDF: collection, package, version, installed path, bytes,
                                        sha256, licence (from the package's DEP-5 copyright)

Licences: the TeX Live documentation is under the licences of its packages (mostly LPPL, some GPL,
public domain or others, per file in the copyright); the R manuals are GPL-2+. Fine to fetch and train
on; the PDFs are never committed. Requires apt-get (Debian bookworm, after `apt-get update`).

Usage: python scripts/fetch_documents.py [--collections science humanities r-manuals] [--out data]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fetch_data import REPO, Deb, DebFile, Downloads, log, sha256_bytes, write_if_changed, write_tsv  # noqa: E402

COLLECTIONS = {
    "science": Deb(
        "texlive-science-doc",
        "2022.20230122-4",
        "0e0fcc74646b916402124e8394a7a8d896e1c959cd9b184b0d7a61e08c6e72db",
    ),
    "humanities": Deb(
        "texlive-humanities-doc",
        "2022.20230122-4",
        "b9ff3e33bfad812999000ae009d701d867701afad144433c36a78322f3d88e33",
    ),
    "r-manuals": Deb(
        "r-doc-pdf", "4.2.2.20221110-2", "beb104ad5818d261f280a868294645ca31d7c63365f2c9a55aa3ca9aad5aa71d"
    ),
}
PDF_PATTERN = "./usr/share/*.pdf"
TSV_DOCUMENTS = ["file", "collection", "package", "version", "source_path", "bytes", "sha256", "license"]


def pdf_name(member: str) -> str:
    """An installed path -> a flat file name that keeps where it came from (two packages may both ship
    a `doc.pdf`, so the base name alone is not unique)."""
    rel = member.removeprefix("./usr/share/").removeprefix("doc/")
    return rel.replace("/", "__")


def extract_pdfs(deb: DebFile, collection: str, pkg: Deb, version: str, dest: Path) -> list[dict]:
    """Write every PDF of an opened .deb to dest/<collection>/ (md5-checked by DebFile.read); one
    MANIFEST row each. Files that are not PDFs despite the name (no %PDF header) are skipped."""
    rows = []
    for member in deb.glob(PDF_PATTERN):
        data = deb.read(member)
        if not data.startswith(b"%PDF-"):
            log("documents", f"skipped {member}: no %PDF header")
            continue
        rel = f"{collection}/{pdf_name(member)}"
        write_if_changed(dest / rel, data)
        rows.append(
            dict(
                file=rel,
                collection=collection,
                package=pkg.package,
                version=version,
                source_path=member,
                bytes=len(data),
                sha256=sha256_bytes(data),
                license=deb.copyright_license(pkg.package, member),
            )
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", type=Path, default=REPO / "data", help="output root (default: %(default)s)")
    p.add_argument(
        "--collections",
        nargs="+",
        choices=sorted(COLLECTIONS),
        default=list(COLLECTIONS),
        help="which packages to read (default: all three)",
    )
    p.add_argument(
        "--allow-newer", action="store_true", help="use the archive's version where a pinned one is gone"
    )
    args = p.parse_args(argv)

    out = args.out.resolve()
    dl = Downloads(out, args.allow_newer)
    dest = out / "documents"
    rows: list[dict] = []
    for collection in args.collections:
        pkg = COLLECTIONS[collection]
        path, version = dl.deb(pkg)
        got = extract_pdfs(DebFile(path), collection, pkg, version, dest)
        log("documents", f"{collection}: {len(got)} PDFs, {sum(r['bytes'] for r in got) / 1e6:.1f} MB")
        rows += got
    write_tsv(dest / "MANIFEST.tsv", TSV_DOCUMENTS, sorted(rows, key=lambda r: r["file"]))
    log("done", f"{len(rows)} PDFs -> {dest}/MANIFEST.tsv; downloads recorded in {dl.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
