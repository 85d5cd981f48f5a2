"""The JSON-lines manifest of DESIGN.md: one page per line, image path relative to the file."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from docrec.formats import ReadOptions, atomic_write, bounded_int, iter_files, relative_image
from docrec.pages import DataError, Line, Page, Region, resolve_image

PAGE_KEYS = {"image", "width", "height", "regions", "lines"}
REGION_KEYS = {"id", "type", "polygon", "label"}
# "confidence": the reader's confidence in the text (predict.py writes it), in [0, 1].
LINE_KEYS = {"id", "region", "type", "polygon", "baseline", "text", "label", "confidence"}
#: Refuse absurd lines before json parses them (a page of a few thousand lines is ~1 MB).
MAX_LINE_BYTES = 64 * 1024 * 1024


def find(path: Path) -> Iterator[Path]:
    return iter_files(path, (".jsonl",))


def _check_keys(obj, allowed: set[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - allowed
    if unknown:
        raise DataError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")


def page_from_dict(obj: dict, root: Path, source: str, opts: ReadOptions | None = None) -> Page:
    """Build a Page from one manifest record, validating fields."""
    opts = opts or ReadOptions()
    _check_keys(obj, PAGE_KEYS, f"{source}: page")
    for key in ("image", "width", "height"):
        if key not in obj:
            raise DataError(f"{source}: page: missing field {key!r}")
    resolve_image(root, obj["image"], source, opts.allow_outside_root)
    regions, lines = [], []
    for i, r in enumerate(obj.get("regions") or []):
        _check_keys(r, REGION_KEYS, f"{source}: regions[{i}]")
        regions.append(Region(id=r.get("id", f"r{i}"), polygon=r.get("polygon"), kind=r.get("type", opts.kind or "printed"),
                              label=r.get("label")))
    for i, ln in enumerate(obj.get("lines") or []):
        _check_keys(ln, LINE_KEYS, f"{source}: lines[{i}]")
        lines.append(Line(id=ln.get("id", f"l{i}"), polygon=ln.get("polygon"), text=ln.get("text") or "",
                          kind=ln.get("type", opts.kind or "printed"), baseline=ln.get("baseline"),
                          region=ln.get("region"), label=ln.get("label"), confidence=ln.get("confidence")))
    return Page(image=obj["image"], width=obj["width"], height=obj["height"], regions=regions, lines=lines,
                root=root, source=source)


def read(file: Path, opts: ReadOptions | None = None) -> Iterator[Page]:
    """Pages of one manifest; errors name the file and its line number."""
    root = file.parent
    try:
        fh = open(file, "rb")  # noqa: SIM115 - open errors are reported apart from parse errors
    except OSError as exc:
        raise DataError(f"{file}: cannot open manifest ({exc})") from None
    with fh:
        # A record at most MAX_LINE_BYTES long is read at a time, so a file without newlines cannot fill memory.
        for lineno, raw in enumerate(iter(lambda: fh.readline(MAX_LINE_BYTES + 1), b""), 1):
            source = f"{file}:{lineno}"
            try:
                if len(raw) > MAX_LINE_BYTES:
                    while raw and not raw.endswith(b"\n"):  # the rest of the record, skipped in lenient mode
                        raw = fh.readline(MAX_LINE_BYTES + 1)
                    raise DataError(f"{source}: record of more than {MAX_LINE_BYTES:,} bytes is too large")
                try:
                    text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                except UnicodeDecodeError as exc:
                    raise DataError(f"{source}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
                if not text.strip():
                    continue
                yield _record(text, root, source, opts)
            except DataError as exc:
                if opts is None or opts.on_error is None:
                    raise
                opts.on_error(source, str(exc))


def _record(text: str, root: Path, source: str, opts: ReadOptions | None) -> Page:
    try:
        obj = json.loads(text, parse_int=bounded_int)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise DataError(f"{source}: malformed JSON ({exc})") from None
    return page_from_dict(obj, root, source, opts)


def page_to_dict(page: Page, image: str | None = None) -> dict:
    """One manifest record; ``image`` overrides the stored path (e.g. made relative)."""
    def pts(p):
        return [[round(x, 2), round(y, 2)] for x, y in p]

    rec: dict = {"image": image or page.image, "width": page.width, "height": page.height,
                 "regions": [], "lines": []}
    for r in page.regions:
        d = {"id": r.id, "type": r.kind, "polygon": pts(r.polygon)}
        if r.label is not None:
            d["label"] = r.label
        rec["regions"].append(d)
    for ln in page.lines:
        d = {"id": ln.id, "region": ln.region, "type": ln.kind, "polygon": pts(ln.polygon),
             "baseline": pts(ln.baseline) if ln.baseline is not None else None, "text": ln.text}
        if ln.label is not None:
            d["label"] = ln.label
        if ln.confidence is not None:
            d["confidence"] = round(ln.confidence, 4)
        rec["lines"].append(d)
    return rec


def write(pages: Iterable[Page], out: str | Path) -> Path:
    """Write a manifest atomically; image paths are made relative to its folder."""
    out = Path(out)
    with atomic_write(out) as fh:
        for p in pages:
            fh.write(json.dumps(page_to_dict(p, relative_image(p, out.parent)), ensure_ascii=False) + "\n")
    return out
