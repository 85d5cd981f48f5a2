"""The real datasets of ``../shared/realdata`` and their fixed split into fine-tune and kept-apart pages.

The split is written down in ``data/realdata_split.json`` (the kept-apart pages of each set by
file stem; every other readable page is for fine-tuning), so the tests, the fine-tuning recipe,
``scripts/evaluate.py`` and the Tesseract anchor (``scripts/bench_tesseract.py``) score the same
pages. It was drawn by :func:`draw_split`: pages are grouped by writer or document where the set
has them (a will, a letter), groups sorted, and every fourth group from the second on is kept
apart, so no hand is on both sides.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from docrec.formats import load
from docrec.formats import manifest as manifest_fmt
from docrec.pages import DataError, Page

REPO = Path(__file__).resolve().parents[2]
#: Where the real datasets live beside a checkout.
REALDATA = REPO.parent / "shared" / "realdata"
SPLIT_FILE = REPO / "data" / "realdata_split.json"
PARTS = ("finetune", "kept")


@dataclass(frozen=True)
class RealSet:
    """One real dataset: how to read it, how Tesseract reads it, how its pages group by hand."""

    name: str
    format: str
    folder: str  # under the realdata folder
    lang: str  # Tesseract's language
    options: dict = field(default_factory=dict)  # reader options (kind, strict)
    group: str | None = None  # regex whose first match in a page's stem names its group (writer, letter)


SETS = {s.name: s for s in (
    RealSet("funsd", "funsd", "funsd/dataset/training_data", "eng"),
    RealSet("sroie", "sroie", "sroie/data", "eng"),
    RealSet("cremma", "alto", "cremma_testaments_de_poilus/data", "fra", {"kind": "handwritten"}, r"^(.*)-\d+$"),
    # Two of its nine pages hold polygons of a larger scan: read leniently, they are left out.
    RealSet("hooker", "pagexml", "joseph_hooker_htr", "eng", {"kind": "handwritten", "strict": False},
            r"^(JDH_\d+_\d+_\d+)_"),
)}


def available(root: Path = REALDATA) -> list[str]:
    """The sets whose folder is present under ``root``."""
    return [name for name, s in SETS.items() if (root / s.folder).is_dir()]


def read_set(name: str, root: Path = REALDATA) -> list[Page]:
    """Every readable page of a set, in the reader's order."""
    s = SETS[name]
    opts = dict(s.options)
    strict = opts.pop("strict", True)
    return load(s.format, root / s.folder, strict=strict, **opts).pages


def _stem(page: Page) -> str:
    return Path(page.source).stem


def _group(s: RealSet, stem: str) -> str:
    m = re.match(s.group, stem) if s.group else None
    return m.group(1) if m else stem


def draw_split(name: str, pages: list[Page]) -> list[str]:
    """The kept-apart stems of a set: every fourth group of pages from the second on, groups sorted."""
    s = SETS[name]
    groups = sorted({_group(s, _stem(p)) for p in pages})
    kept = set(groups[1::4])
    return sorted(_stem(p) for p in pages if _group(s, _stem(p)) in kept)


def split_pages(name: str, root: Path = REALDATA, split_file: Path = SPLIT_FILE) -> dict[str, list[Page]]:
    """``{"finetune": [...], "kept": [...]}``: a set's readable pages by the split file."""
    split = json.loads(split_file.read_text(encoding="utf-8"))
    kept = set(split["kept"][name])
    pages = read_set(name, root)
    missing = kept - {_stem(p) for p in pages}
    if missing:
        raise DataError(f"{split_file}: kept-apart page(s) of {name} not among its readable pages: "
                        f"{', '.join(sorted(missing))}")
    return {"finetune": [p for p in pages if _stem(p) not in kept], "kept": [p for p in pages if _stem(p) in kept]}


def write_split(out: Path, root: Path = REALDATA, names: list[str] | None = None) -> dict[str, dict[str, Path]]:
    """Manifests ``out/<set>/{finetune,kept}.jsonl`` of every available set (image paths lead
    outside ``out``: read them with ``data.allow_outside_root=true``)."""
    written: dict[str, dict[str, Path]] = {}
    for name in names or available(root):
        for part, pages in split_pages(name, root).items():
            path = out / name / f"{part}.jsonl"
            manifest_fmt.write(pages, path)
            written.setdefault(name, {})[part] = path
    return written
