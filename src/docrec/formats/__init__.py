"""Readers and writers of annotation formats; every reader yields :class:`docrec.pages.Page`.

``load(fmt, path)`` is the one entry point: it finds the annotation files under ``path``
(a file or a folder searched recursively), reads each, checks its image header, and in
lenient mode skips bad pages, reporting every skip. In a folder, the XML formats take the
files whose root element is theirs (PAGE ``PcGts``, ALTO ``alto``) and count the others they
leave; a file named directly is read whatever its root, so a wrong one is an error.

Images of XML annotations are looked up as the field's tools export them (:func:`locate_image`),
inside the folder the user passed, which is the boundary no image path may leave.
"""

from __future__ import annotations

import importlib
import os
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TextIO

from docrec.images import MAX_PIXELS, image_size
from docrec.pages import DataError, Page, Point, polygon_area

#: format name -> module under docrec.formats exposing ``find(path)`` and ``read(file, **opts)``.
FORMATS = ("manifest", "pagexml", "alto", "funsd", "sroie")


@dataclass
class LoadResult:
    """Pages read, (source, message) for every page skipped in lenient mode, the files of another
    format left in a folder, and how images were found when not beside their annotation."""

    pages: list[Page] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    left: list[tuple[Path, str]] = field(default_factory=list)  # (file, its root element) not of this format
    found: dict[str, list[tuple[str, Path]]] = field(default_factory=dict)  # rule -> (annotation, image)

    def notes(self, fmt: str) -> list[str]:
        """One line per image rule used beyond "beside the annotation" and one for the files left."""
        out = [f"{len(hits)} image(s) found {rule}, e.g. {hits[0][0]} -> {hits[0][1]}"
               for rule, hits in self.found.items()]
        if self.left:
            roots = Counter(root for _, root in self.left)
            kinds = ", ".join(f"{n} <{root}>" for root, n in sorted(roots.items()))
            out.append(f"left {len(self.left)} file(s) that are not {fmt} ({kinds}), e.g. {self.left[0][0]}")
        return out


@dataclass
class ReadOptions:
    """Options every reader accepts."""

    kind: str | None = None  # kind for lines/regions the format cannot classify (None: reader default)
    allow_outside_root: bool = False  # allow image paths that escape ``root``
    check_images: bool = True  # open each image header: exists, readable, size matches
    max_pixels: int = MAX_PIXELS
    # The folder the user passed: image paths may not leave it, and images are looked up in it
    # last (None: each annotation's own folder).
    root: Path | None = None
    # Lenient mode: a reader of many pages per file (the manifest) reports a bad record here and goes on.
    on_error: Callable[[str, str], None] | None = None
    # (rule, annotation, image) of an image found by a rule other than "beside the annotation".
    on_found: Callable[[str, str, Path], None] | None = None
    _names: dict[str, list[Path]] | None = field(default=None, repr=False)  # file name -> files under root


def _module(fmt: str):
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return importlib.import_module(f"docrec.formats.{fmt}")


def check_image(page: Page, max_pixels: int = MAX_PIXELS) -> None:
    """The page's image exists, decodes its header, and has the declared size."""
    w, h = image_size(page.image_path, max_pixels)
    if (w, h) != (page.width, page.height):
        raise DataError(f"{page.source}: declares a {page.width}x{page.height} page but image "
                        f"{page.image_path} is {w}x{h}")


def load(fmt: str, path: str | Path, strict: bool = True, on_skip: Callable[[str, str], None] | None = None,
         limit: int | None = None, **options) -> LoadResult:
    """Read every page of ``fmt`` under ``path`` (the first ``limit`` good ones); strict raises on a bad page."""
    mod = _module(fmt)
    result = LoadResult()

    def skip(source: str, exc: DataError | str) -> None:
        result.skipped.append((source, str(exc)))
        if on_skip is not None:
            on_skip(source, str(exc))

    def found(rule: str, source: str, image: Path) -> None:
        result.found.setdefault(rule, []).append((source, image))

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    opts = ReadOptions(**options, root=export_root(path), on_error=None if strict else skip, on_found=found)
    files = mod.find(path)
    xml_root = getattr(mod, "ROOT_ELEMENT", None)  # the XML formats' root element: images looked up by rules
    if path.is_dir() and xml_root:
        files = of_root(files, xml_root, result.left)
    for source in files:
        if limit is not None and len(result.pages) >= limit:
            break
        try:
            pages = list(islice(mod.read(source, opts), None if limit is None else limit - len(result.pages)))
        except DataError as exc:
            if strict:
                raise
            skip(str(source), exc)
            continue
        for page in pages:
            try:
                if opts.check_images:
                    if xml_root and not page.image_path.is_file():
                        raise DataError(f"{page.source}: image {page.image_path.name!r}: image file not found "
                                        f"(looked beside it, in its parent folder, in {opts.root} and for its file "
                                        "name under that; pass the export's top folder, which holds the images)")
                    check_image(page, opts.max_pixels)
            except DataError as exc:
                if strict:
                    raise
                skip(page.source, exc)
                continue
            result.pages.append(page)
    return result


def iter_files(path: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """``path`` itself, or the files under it with one of ``suffixes``, sorted."""
    if path.is_file():
        yield path
        return
    yield from sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


#: What precedes an XML file's root element: declaration, processing instructions, comments, DOCTYPE.
_PROLOG = re.compile(rb"\s*(?:<\?.*?\?>|<!--.*?-->|<!DOCTYPE(?:[^\[>]|\[.*?\])*>)", re.DOTALL)
_START_TAG = re.compile(rb"\s*<([A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")
_SNIFF_BYTES = 64 * 1024


def root_element(file: Path) -> str | None:
    """The local name of an XML file's root element, from its first bytes; None when they do not
    show one (not XML, truncated, another encoding): such a file is left to the reader to judge."""
    try:
        with open(file, "rb") as fh:
            head = fh.read(4096)  # enough for a declaration and a short comment; the rest only when not
            name = _root_in(head)
            if name is None and len(head) == 4096:
                name = _root_in(head + fh.read(_SNIFF_BYTES - 4096))
            return name
    except OSError:
        return None


def _root_in(head: bytes) -> str | None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        head = head.decode("utf-16", errors="ignore").encode("utf-8")
    head = head.removeprefix(b"\xef\xbb\xbf")
    pos = 0
    while m := _PROLOG.match(head, pos):
        pos = m.end()
    m = _START_TAG.match(head, pos)
    # A name that runs to the end of what was read may be cut short: not told.
    return m.group(2).decode("ascii") if m and m.end() < len(head) else None


def of_root(files: Iterator[Path], name: str, left: list[tuple[Path, str]]) -> Iterator[Path]:
    """The files whose root element is ``name`` (or cannot be told: the reader judges those);
    the others are appended to ``left`` with their root element."""
    for file in files:
        root = root_element(file)
        if root is None or root == name:
            yield file
        else:
            left.append((file, root))


def export_root(path: Path) -> Path:
    """The folder no image path may leave: the folder passed (a file's own folder), or the one
    above it when that holds a ``mets.xml``: the top of a Transkribus export (``doc/page/``) or of
    an OCR-D workspace (one file group's folder), where the images are."""
    folder = path if path.is_dir() else path.parent
    return folder.parent if (folder.parent / "mets.xml").is_file() else folder


#: The rules of :func:`locate_image`, in the order they are tried, as notes name them.
IMAGE_RULES = ("beside the annotation", "in the annotation's parent folder (Transkribus page/, OCR-D)",
               "in the folder passed", "by file name under the folder passed")


def _foreign(name: str) -> PurePosixPath | PureWindowsPath | None:
    """An image name stored as an absolute path or URL (of this machine or another), else None."""
    name = name.removeprefix("file://")
    if re.match(r"[A-Za-z]:[\\/]", name) or "\\" in name:
        return PureWindowsPath(name)
    return PurePosixPath(name) if name.startswith("/") else None


def _inside(path: Path, base: Path) -> bool:
    path = path.resolve()
    return path == base or base in path.parents


def locate_image(file: Path, name: str, opts: ReadOptions, missing_ok: bool = False) -> Path | None:
    """The image an XML annotation ``file`` names, looked up as exports lay it out.

    A relative ``name`` is tried beside the annotation, then in its parent folder (Transkribus
    writes ``page/x.xml`` for ``x.jpg``; OCR-D names images from the workspace), then in
    ``opts.root`` (the folder passed). An absolute one is taken as it is when it exists here.
    Failing those (a path from another machine, a moved folder), its file name alone is looked up
    in those folders, then anywhere under the root; two files of that name there are an error
    naming both. Every path must stay inside the root (unless ``allow_outside_root``): a relative
    path that leaves it is refused outright. ``opts.on_found`` hears of every image not found
    beside the annotation. Nothing found: None with ``missing_ok``, else the path beside the
    annotation, which :func:`load`'s image check reports missing with the places looked.
    """
    base = (opts.root or file.parent).resolve()
    source = str(file)

    def allowed(path: Path) -> bool:
        return opts.allow_outside_root or _inside(path, base)

    def escapes() -> DataError:
        return DataError(f"{source}: image: path {name!r} escapes the dataset root {base} "
                         "(pass allow_outside_root=True / --allow-outside-root to permit it)")

    # (folder, index of its rule), nearest first; a folder outside the boundary is not searched.
    folders = {file.parent: 0}
    for folder, rule in ((file.parent.parent, 1), (opts.root, 2)):
        if folder is not None and folder not in folders and allowed(folder):
            folders[folder] = rule

    def hit(rule: int, path: Path) -> Path:
        if rule and opts.on_found is not None:
            opts.on_found(IMAGE_RULES[rule], source, path)
        return path

    foreign = _foreign(name)
    if foreign is None:
        if not allowed(file.parent / name):
            raise escapes()
        for folder, rule in folders.items():
            if allowed(folder / name) and (folder / name).is_file():
                return hit(rule, folder / name)
    else:
        here = Path(str(foreign))
        if here.is_absolute() and here.is_file():
            if not allowed(here):
                raise escapes()
            return here
    stem = foreign.name if foreign is not None else PurePosixPath(name).name
    for folder in folders:
        if (folder / stem).is_file():
            return hit(3, folder / stem)
    matches = [m for m in _names_under(base, opts).get(stem, []) if allowed(m)]
    if len(matches) > 1:
        raise DataError(f"{source}: image {name!r}: its file name matches {len(matches)} files under {base}: "
                        f"{matches[0]} and {matches[1]}; keep one, or give the image's path relative to the XML")
    if matches:
        return hit(3, matches[0])
    if missing_ok:
        return None
    return file.parent / (stem if foreign is not None else name)  # the image check says it is missing


def _names_under(base: Path, opts: ReadOptions) -> dict[str, list[Path]]:
    """Every file under ``base`` by file name, built once per load."""
    if opts._names is None:
        names: dict[str, list[Path]] = {}
        for folder, _, files in os.walk(base):
            for f in files:
                names.setdefault(f, []).append(Path(folder) / f)
        opts._names = {k: sorted(v) for k, v in names.items()}
    return opts._names


def header_size(image: Path, source: Path, max_pixels: int = MAX_PIXELS) -> tuple[int, int]:
    """Page size from an image header, for formats whose annotation has none; errors name ``source``."""
    try:
        return image_size(image, max_pixels)
    except DataError as exc:
        raise DataError(f"{source}: page size needs the image: {exc}") from None


def box_polygon(x0: float, y0: float, x1: float, y1: float) -> list[Point]:
    """The axis-aligned rectangle with corners (x0, y0) and (x1, y1), clockwise from top-left."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def bounded_int(s: str) -> int:
    """``json.load(..., parse_int=bounded_int)``: an integer of at most 12 digits, else ValueError
    (the JSON readers' malformed-JSON error). Coordinates and ids never need more; a 400-digit
    number would otherwise overflow a float deep inside a reader."""
    if len(s.lstrip("-")) > 12:
        raise ValueError(f"number {s[:20]}... is too large")
    return int(s)


def widen_box(x0: float, y0: float, x1: float, y1: float, width: int, height: int
              ) -> tuple[tuple[float, float, float, float], bool]:
    """Order a box's corners and grow a zero width or height to 1 px inside the page; True if grown.

    Word-level annotations hold a few zero-area boxes (a mark of one pixel); they still locate
    text, so they are kept with the smallest non-empty extent rather than refused.
    """
    x0, x1 = sorted((x0, x1))
    y0, y1 = sorted((y0, y1))
    grown = False
    if x1 == x0:
        x0, x1 = (x0, x0 + 1) if x0 + 1 <= width else (x0 - 1, x0)
        grown = True
    if y1 == y0:
        y0, y1 = (y0, y0 + 1) if y0 + 1 <= height else (y0 - 1, y0)
        grown = True
    return (x0, y0, x1, y1), grown


def integer_polygon(pts: list[Point], width: int, height: int) -> list[tuple[int, int]]:
    """Points rounded to whole pixels (what PAGE allows), never a polygon of zero area.

    A polygon thinner than a pixel can round to a line, which no reader accepts back; it is
    then written as its bounding box, grown to 1 px inside the page (:func:`widen_box`).
    """
    out = [(round(x), round(y)) for x, y in pts]
    if polygon_area([(float(x), float(y)) for x, y in out]) > 0:
        return out
    xs, ys = [x for x, _ in out], [y for _, y in out]
    (x0, y0, x1, y1), _ = widen_box(min(xs), min(ys), max(xs), max(ys), width, height)
    return [(int(x), int(y)) for x, y in box_polygon(x0, y0, x1, y1)]


def mirrored_names(files: list[Path], base: Path) -> list[Path]:
    """Per file, the name its outputs take (a suffix is appended): its path under ``base``, stem only.

    Files of one folder that share a stem (``x.png`` and ``x.tif``) keep their suffix
    (``x.png``), so their outputs cannot collide; ``page.v1.jpg`` stays ``page.v1``.
    """
    rel = [Path(os.path.relpath(f, base)) for f in files]
    stems = Counter((r.parent, r.stem) for r in rel)
    return [r if stems[(r.parent, r.stem)] > 1 else r.with_name(r.stem) for r in rel]


def relative_image(page: Page, out_dir: Path) -> str:
    """The page's image path relative to ``out_dir`` (where a written annotation will live)."""
    return os.path.relpath(page.image_path.resolve(), out_dir.resolve())


@contextmanager
def atomic_write(out: Path) -> Iterator[TextIO]:
    """A UTF-8 text handle whose content replaces ``out`` only once the block completes."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
