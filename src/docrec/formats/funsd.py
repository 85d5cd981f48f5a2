"""FUNSD reader: ``<split>/annotations/<stem>.json`` annotates ``<split>/images/<stem>.png``.

FUNSD has entities (a form's question, answer, header or other text) made of words, and no
line level. Mapping:

* Each entity -> a :class:`Region` ``e<id>`` with the entity box as polygon and the FUNSD label
  as ``label``. Region kind: ``answer`` -> ``"form_field"`` (the value filled into a form: its
  role, not its script; most are typed, some handwritten, and FUNSD does not say which);
  question, header and other -> ``opts.kind`` or ``"printed"`` (FUNSD's labels are printed).
* The words of one entity that share a row form a :class:`Line` ``e<id>_l<k>``: words are taken
  top to bottom and join the current row while their vertical centre lies within half the
  entity's median word height of the row's mean centre; a row is read left to right. Polygon:
  the union box of its words; text: the non-empty word texts joined by single spaces (a line
  whose words are all empty is kept, with empty text); kind ``opts.kind`` or ``"printed"``;
  label: the entity's label; region: the entity.
* An entity without words becomes one line from its own box and text.
* A box of zero width or height (a one-pixel mark) is widened to 1 px inside the page and
  counted in a warning, rather than refused; its text is real.
* The page size comes from the PNG header (the JSON has none).
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Iterator
from pathlib import Path

from docrec.formats import ReadOptions, bounded_int, box_polygon, header_size, widen_box
from docrec.pages import DataError, Line, Page, Region

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

#: FUNSD label -> region kind; labels not listed take ``opts.kind`` or "printed".
REGION_KINDS = {"answer": "form_field"}


def find(path: Path) -> Iterator[Path]:
    """Annotation files: ``path`` itself, the .json in any ``annotations`` folder below it, or directly in it."""
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*.json")
                      if p.is_file() and (p.parent.name == "annotations" or p.parent == path))


def read(file: Path, opts: ReadOptions | None = None) -> Iterator[Page]:
    """The page of one FUNSD annotation file."""
    opts = opts or ReadOptions()
    form = _load(file)
    root = file.parent.parent
    image = f"images/{file.stem}.png"
    width, height = header_size(root / image, file, opts.max_pixels)
    kind = opts.kind or "printed"
    widened = 0

    def box(raw, where: str) -> Box:
        nonlocal widened
        if (not isinstance(raw, list) or len(raw) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in raw)):
            raise DataError(f"{file}: {where}: box must be [x0, y0, x1, y1] numbers, got {raw!r}")
        if not all(math.isfinite(v) for v in raw):  # 1e400 reads as inf; long integers are refused by _load
            raise DataError(f"{file}: {where}: box coordinates must be finite numbers, got {raw!r}")
        out, grown = widen_box(*raw, width, height)
        widened += grown
        return out

    regions, lines = [], []
    for i, ent in enumerate(form):
        where = f"entity #{i}"
        if not isinstance(ent, dict):
            raise DataError(f"{file}: {where}: expected an object, got {type(ent).__name__}")
        for key in ("id", "box", "label"):
            if key not in ent:
                raise DataError(f"{file}: {where}: missing {key!r}")
        where = f"entity id={ent['id']}"
        rid, label = f"e{ent['id']}", ent["label"]
        regions.append(Region(id=rid, polygon=box_polygon(*box(ent["box"], where)),
                              kind=REGION_KINDS.get(label, kind), label=label))
        words = ent.get("words") or []
        if not isinstance(words, list):
            raise DataError(f"{file}: {where}: words must be a list")
        if not words:
            words = [{"box": ent["box"], "text": ent.get("text", "")}]
        parsed = []
        for k, word in enumerate(words):
            wwhere = f"{where} word #{k}"
            text = word.get("text", "") if isinstance(word, dict) else None
            if not isinstance(text, str):
                raise DataError(f"{file}: {wwhere}: expected an object with a string 'text'")
            parsed.append((box(word.get("box"), wwhere), text))
        for k, row in enumerate(_rows(parsed)):
            x0 = min(b[0] for b, _ in row)
            y0 = min(b[1] for b, _ in row)
            x1 = max(b[2] for b, _ in row)
            y1 = max(b[3] for b, _ in row)
            lines.append(Line(id=f"{rid}_l{k}", polygon=box_polygon(x0, y0, x1, y1),
                              text=" ".join(t for _, t in row if t), kind=kind, region=rid, label=label))
    if widened:
        log.warning("%s: widened %d zero-area box(es) to 1 px", file, widened)
    yield Page(image=image, width=width, height=height, regions=regions, lines=lines, root=root, source=str(file))


def _load(file: Path) -> list:
    try:
        with open(file, encoding="utf-8") as fh:
            obj = json.load(fh, parse_int=bounded_int)
    except OSError as exc:
        raise DataError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}:{exc.lineno}:{exc.colno}: malformed JSON ({exc.msg})") from None
    except (UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise DataError(f"{file}: malformed JSON ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("form"), list):
        raise DataError(f"{file}: not a FUNSD annotation: expected {{\"form\": [...]}}")
    return obj["form"]


def _rows(words: list[tuple[Box, str]]) -> list[list[tuple[Box, str]]]:
    """Group words into rows by vertical centre; each row left to right, rows top to bottom."""
    tolerance = 0.5 * statistics.median(b[3] - b[1] for b, _ in words)
    rows: list[list[tuple[Box, str]]] = []
    centres: list[list[float]] = []
    for word in sorted(words, key=lambda w: (w[0][1] + w[0][3]) / 2):
        cy = (word[0][1] + word[0][3]) / 2
        if rows and abs(cy - statistics.fmean(centres[-1])) <= tolerance:
            rows[-1].append(word)
            centres[-1].append(cy)
        else:
            rows.append([word])
            centres.append([cy])
    return [sorted(row, key=lambda w: w[0][0]) for row in rows]
