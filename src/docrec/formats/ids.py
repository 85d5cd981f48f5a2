"""Element ids for the XML writers: every id a valid ``xs:ID`` (an NCName), unique over the document.

PAGE and ALTO declare their ids ``xs:ID``: a name that starts with a letter or ``_``, holds no
spaces or colons, and appears once in the whole file, whatever the element. Ids that come from
input (a manifest, FUNSD, another tool) need not be: ``1``, ``line 1``, ``a:b``, a region and a
line both called ``r1``. :func:`document_ids` keeps every id that is already valid and unique,
and maps the others deterministically (same input, same output), never silently: the writer
logs each mapping, naming the file.

Only ASCII letters, digits, ``_``, ``-`` and ``.`` are kept: the XML name rules allow more, but
validators differ on which non-ASCII letters they accept, and a file that one tool refuses is
worth less than an id with an underscore.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence

log = logging.getLogger("docrec")

_VALID = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
_BAD_CHAR = re.compile(r"[^A-Za-z0-9_.-]")


def is_ncname(ident: str) -> bool:
    """Whether ``ident`` is an id every validator accepts (an ASCII NCName)."""
    return bool(_VALID.fullmatch(ident))


def sanitize(ident: str) -> str:
    """``ident`` made an ASCII NCName: other characters become ``_``; a bad first character gets ``id_`` before it."""
    out = _BAD_CHAR.sub("_", ident)
    return out if out and (out[0].isalpha() or out[0] == "_") else f"id_{out}"


def document_ids(ids: Sequence[str], reserved: Iterable[str] = ()) -> list[str]:
    """New ids for elements whose ids are ``ids`` (document order; the same id may repeat).

    The first occurrence of every valid id that is not ``reserved`` keeps it; every other
    element gets :func:`sanitize` of its id, with ``_2``, ``_3`` ... appended until it is
    unique against everything already taken.
    """
    taken = set(reserved)
    out: list[str | None] = [None] * len(ids)
    for i, ident in enumerate(ids):
        if is_ncname(ident) and ident not in taken:
            taken.add(ident)
            out[i] = ident
    for i, ident in enumerate(ids):
        if out[i] is not None:
            continue
        base = sanitize(ident)
        new, n = base, 1
        while new in taken:
            n += 1
            new = f"{base}_{n}"
        taken.add(new)
        out[i] = new
    return out  # type: ignore[return-value]


def report(source: str, old: Sequence[str], new: Sequence[str]) -> None:
    """Log every id the writer had to change (at most 10 named), naming the output file."""
    changed = [(a, b) for a, b in zip(old, new) if a != b]
    if changed:
        shown = ", ".join(f"{a!r} -> {b!r}" for a, b in changed[:10])
        more = f" and {len(changed) - 10} more" if len(changed) > 10 else ""
        log.warning("%s: %d id(s) are not valid unique XML ids and were renamed: %s%s",
                    source, len(changed), shown, more)
