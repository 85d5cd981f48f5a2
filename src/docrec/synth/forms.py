"""Form pages: printed labels, boxes, underlines, character combs and checkboxes, filled in by hand.

A filled field is a ``form_field`` region (the value area and the ink written in it) holding
one ``handwritten`` line; labels, titles and options are ``printed`` lines in printed regions.
A field left blank has no region: there is nothing to read in it.
"""

from __future__ import annotations

import re
from dataclasses import replace

import cv2
import numpy as np

from docrec.pages import Line
from docrec.synth import fonts, render
from docrec.synth.canvas import BLACK, PENS, Color
from docrec.synth.layouts import Sheet, print_lines, writer
from docrec.synth.render import Glyph, HandStyle, Word
from docrec.synth.text import FIELDS

_FORM_INKS: tuple[Color, ...] = ((0.08, 0.08, 0.09), (0.1, 0.2, 0.45), (0.45, 0.1, 0.1), (0.1, 0.32, 0.2))
#: Values short enough to write one character per box.
_COMB_KINDS = {"postcode", "date", "phone", "quantity"}
_COMB_CHARS = re.compile(r"[0-9A-Z/.-]{1,12}")


class _Form:
    """The state shared by the fields of one form: fonts, the writer, the pen."""

    def __init__(self, p: Sheet) -> None:
        self.p = p
        rng = p.rng
        self.font = fonts.choose(rng, "sans" if p.chance(0.7) else "serif")
        self.bold = fonts.choose(rng, self.font.style, bold=True, like=self.font)
        self.size = p.pt(p.uniform(8, 10.5))
        self.hand = writer(p, caps=0.5, x_mm=(2.0, 2.9))
        self.pen = PENS[int(rng.integers(len(PENS)))]
        self.style = ["underline", "box", "dotted", "labelled_box"][int(rng.integers(4))]
        self.thick = max(1, round(p.dpi / 150))
        self.fill = p.uniform(0.75, 1.0)  # chance that a field is filled in
        self.row_h = max(self.hand.size * 2.2, self.size * 2.6)
        # Some forms are filled in on a typewriter or a printer: values in a monospace face.
        self.typed = fonts.choose(rng, "mono", bold=p.chance(0.2)) if p.chance(0.3) else None

    def label(self, text: str, x0: float, x1: float, y: float, bold: bool = False) -> list[Line]:
        """A printed label with its baseline at ``y``."""
        lines, _ = print_lines(self.p, [text], self.bold if bold else self.font, self.size, x0, x1, y, wrap=False)
        return lines

    def value(self, text: str, x0: float, x1: float, y: float, hand: HandStyle | None = None) -> Line | None:
        """Write ``text`` by hand from (x0, y) so that it ends before x1: smaller, or shortened, if needed."""
        p = self.p
        if self.typed is not None and hand is None:
            return self._typed(text, x0, x1, y)
        hand = hand or self.hand
        words = fonts.fit_text(hand.font, text).split()
        if not words:
            return None
        for shrink in (1.0, 0.88, 0.76):
            style = replace(hand, size=max(4, round(hand.size * shrink)))
            r = render.write_hand(" ".join(words), style, p.rng)[0]
            if x0 + r.right <= x1:
                break
        while x0 + r.right > x1 and len(words) > 1:  # still too long at the smallest size
            words = words[:-1]
            r = render.write_hand(" ".join(words), style, p.rng)[0]
        if x0 + r.right > x1 or not p.canvas.fits(r, x0, y):
            return None
        return p.canvas.put(r, x0, y, "handwritten", self.pen, p.uniform(0.8, 1.0))

    def _typed(self, text: str, x0: float, x1: float, y: float) -> Line | None:
        """A typewritten value from (x0, y), shortened by words to end before x1."""
        p = self.p
        text = text.upper() if p.chance(p.caps) else text
        words = fonts.fit_text(self.typed, text).split()
        size = round(self.size * p.uniform(0.95, 1.2))
        while words:
            r = render.render_printed(" ".join(words), self.typed, size)
            if x0 + r.advance <= x1:
                break
            words = words[:-1]
        if not words or not p.canvas.fits(r, x0, y):
            return None
        return p.canvas.put(r, x0, y, "printed", BLACK, p.uniform(0.7, 1.0))

    def comb(self, text: str, x0: float, y_top: float, cell: float, count: int) -> Line | None:
        """Write one character per box of a comb of ``count`` boxes starting at x0."""
        p = self.p
        chars = "".join(fonts.fit_text(self.hand.font, text).split())
        if not chars or len(chars) > count:
            return None
        style = self.hand
        glyphs = []
        for i, ch in enumerate(chars):
            size = max(4, round(style.size * (1 + p.rng.normal(0, style.scale_jitter))))
            w = fonts.load(style.font, size).getlength(ch)
            glyphs.append(Glyph(ch, i * cell + (cell - w) / 2 + p.rng.normal(0, cell * 0.05),
                                float(p.rng.normal(0, style.jitter * style.size)), size))
        word = Word(chars, glyphs, len(chars) * cell)
        r = render.render_handwritten([word], [], replace(style, wobble=style.wobble / 3), p.rng)
        y = y_top + cell * 0.8
        if not p.canvas.fits(r, x0, y):
            return None
        return p.canvas.put(r, x0, y, "handwritten", self.pen, p.uniform(0.8, 1.0))


def form_page(p: Sheet) -> None:
    """A form: title, instructions, sections of fields and checkboxes, a signature at the end."""
    c, ts, rng = p.canvas, p.text, p.rng
    if p.chance(0.35):
        p.ink = c.graphics_color = _FORM_INKS[int(rng.integers(1, len(_FORM_INKS)))]
    f = _Form(p)
    y = p.top
    if p.chance(0.5):
        code = f"Cerfa n° {int(rng.integers(10000, 99999))}*0{int(rng.integers(1, 9))}" if ts.lang == "fr" \
            else f"Form {ts.ref()}"
        lines, _ = print_lines(p, [code], f.font, round(f.size * 0.85), p.left, p.right, y + f.size, align="right")
        c.region("printed", lines)
    title_size = p.pt(p.uniform(14, 20))
    title, y = print_lines(p, [ts.form_title()], f.bold, title_size, p.left, p.right, y + title_size * 1.8,
                           align="center" if p.chance(0.6) else "left")
    c.region("printed", title)
    if p.chance(0.6):
        info, y = print_lines(p, [ts.instruction()], f.font, f.size, p.left, p.right, y + f.size * 0.2)
        c.region("printed", info)
    y += f.size
    section = 1
    order = [int(k) for k in rng.permutation(len(FIELDS))]
    while y + f.row_h * 3 < p.bottom - f.row_h * 2:
        y = _section_header(f, ts.section(section), y)
        section += 1
        for _ in range(int(rng.integers(2, 5))):
            if y + f.row_h > p.bottom - f.row_h * 2.5:
                break
            if p.chance(0.2):
                y = _choice_row(f, y)
                continue
            n = int(rng.choice([1, 1, 2, 2, 3]))
            kinds = [FIELDS[order.pop() if order else int(rng.integers(len(FIELDS)))] for _ in range(n)]
            gap = p.mm(5)
            width = (p.right - p.left - gap * (n - 1)) / n
            bottoms = [_field(f, kind, p.left + i * (width + gap), p.left + i * (width + gap) + width, y)
                       for i, kind in enumerate(kinds)]
            y = max(bottoms) + f.row_h * 0.35
        y += f.row_h * 0.3
    _signature(f, y)


def _section_header(f: _Form, text: str, y: float) -> float:
    """A section heading, sometimes on a tinted band; returns the top of the next row."""
    p = f.p
    h = f.size * 2.0
    if p.chance(0.5):
        cv2.rectangle(p.canvas.graphics, (int(p.left), int(y)), (int(p.right), int(y + h)), 45, -1)
    lines = f.label(text, p.left + p.mm(1.5), p.right, y + h * 0.68, bold=True)
    p.canvas.region("printed", lines)
    return y + h + f.size * 0.6


def _field(f: _Form, field: tuple[str, str, str], x0: float, x1: float, y: float) -> float:
    """One labelled field in the row starting at ``y``; returns the row's bottom."""
    p, c = f.p, f.p.canvas
    kind, english, french = field
    label_text = p.text.label(english, french) + ("" if f.style == "labelled_box" else p.text.pick([":", "", " :"]))
    value = p.text.value(kind)
    filled = p.chance(f.fill)
    g = c.graphics
    hand = f.hand
    cell = hand.size * 1.25
    compact = "".join(value.split())
    if kind in _COMB_KINDS and _COMB_CHARS.fullmatch(compact) and len(compact) * cell <= x1 - x0 and p.chance(0.4):
        labels = f.label(label_text, x0, x1, y + f.size)
        count = len(compact)
        top = y + f.size * 1.5
        for i in range(count):
            cv2.rectangle(g, (int(x0 + i * cell), int(top)), (int(x0 + (i + 1) * cell), int(top + cell)), 255,
                          f.thick)
        c.region("printed", labels)
        line = f.comb(value, x0, top, cell, count) if filled and count else None
        if line:
            c.region("form_field", [line], boxes=((x0, top, x0 + count * cell, top + cell),), pad=1.0)
        return top + cell
    if f.style in ("underline", "dotted"):
        yb = y + f.row_h * 0.75
        labels = f.label(label_text, x0, x1, yb)
        c.region("printed", labels)
        lx = max((max(px for px, _ in ln.polygon) for ln in labels), default=x0) + p.mm(2)
        if lx > x1 - p.mm(15):
            return yb + f.size * 0.5
        yl = int(yb + f.size * 0.25)
        if f.style == "underline":
            cv2.line(g, (int(lx), yl), (int(x1), yl), 255, f.thick)
        else:
            for xd in np.arange(lx, x1, f.size * 0.35):
                cv2.circle(g, (int(xd), yl), f.thick, 255, -1)
        area = (lx, yb - hand.size * 1.2, x1, yl + f.thick)
        line = f.value(value, lx + p.mm(p.uniform(1, 6)), x1, yl - hand.size * p.uniform(0.1, 0.3)) if filled else None
        if line:
            c.region("form_field", [line], boxes=(area,), pad=1.0)
        return yl
    # Boxed fields: the label above the box, or small inside its top-left corner.
    inside = f.style == "labelled_box"
    small = round(f.size * 0.85) if inside else f.size
    box_top = y if inside else y + f.size * 1.5
    box_h = hand.size * 1.6 + (small * 1.3 if inside else 0)
    cv2.rectangle(g, (int(x0), int(box_top)), (int(x1), int(box_top + box_h)), 255, f.thick)
    lines, _ = print_lines(p, [label_text], f.font, small, x0 + (p.mm(1) if inside else 0), x1,
                           box_top + small * 1.1 if inside else y + f.size, wrap=False)
    c.region("printed", lines)
    yb = box_top + box_h - hand.size * p.uniform(0.35, 0.6)
    line = f.value(value, x0 + p.mm(p.uniform(1.5, 4)), x1 - p.mm(1), yb) if filled else None
    if line:
        c.region("form_field", [line], boxes=((x0, box_top, x1, box_top + box_h),), pad=1.0)
    return box_top + box_h


def _choice_row(f: _Form, y: float) -> float:
    """A question with checkbox options, one or two of them ticked by hand."""
    p, c = f.p, f.p.canvas
    question, options = p.text.choice()
    yb = y + f.row_h * 0.7
    lines = f.label(question + ("" if question.endswith("?") else ":"), p.left, p.right, yb)
    if not lines:
        return y + f.row_h
    x = max(px for px, _ in lines[0].polygon) + p.mm(4)
    box = f.size * 1.1
    ticks = {int(p.rng.integers(len(options)))} if p.chance(0.85) else set()
    for i, option in enumerate(options):
        if x + box + p.mm(25) > p.right:
            break
        x0, y0 = int(x), int(yb - box * 0.9)
        cv2.rectangle(c.graphics, (x0, y0), (int(x0 + box), int(y0 + box)), 255, f.thick)
        if i in ticks:
            _tick(f, x0, y0, box)
        opt = f.label(option, x + box + p.mm(1.5), p.right, yb)
        lines += opt
        x = max((max(px for px, _ in ln.polygon) for ln in opt), default=x) + p.mm(6)
    c.region("printed", lines)
    return yb + f.row_h * 0.3


def _tick(f: _Form, x: float, y: float, box: float) -> None:
    """A hand-drawn cross or check mark in the box at (x, y)."""
    rng, hand = f.p.rng, f.hand
    j = box * 0.12

    def pt(u: float, v: float) -> tuple[float, float]:
        return (x + u * box + rng.normal(0, j), y + v * box + rng.normal(0, j))

    thick = max(1, round(hand.size / 14))
    if rng.random() < 0.5:
        f.p.canvas.scribble([pt(0.1, 0.1), pt(0.9, 0.9)], thick, f.pen)
        f.p.canvas.scribble([pt(0.9, 0.1), pt(0.1, 0.9)], thick, f.pen)
    else:
        f.p.canvas.scribble([pt(0.1, 0.5), pt(0.4, 0.85), pt(1.1, -0.3)], thick, f.pen)


def _signature(f: _Form, y: float) -> None:
    """'Date' and 'Signature' boxes at the foot of the form; the signature is a name in a script hand."""
    p, c, ts = f.p, f.p.canvas, f.p.text
    y = max(y, p.bottom - f.row_h * 3)
    half = (p.left + p.right) / 2
    _field(f, ("date", "Date", "Fait le"), p.left, half - p.mm(5), y)
    labels = f.label(ts.label("Signature", "Signature") + ":", half, p.right, y + f.size)
    c.region("printed", labels)
    sig_hand: HandStyle = replace(render.random_hand(p.rng, fonts.choose_hand(p.rng, caps_only=False),
                                                     p.mm(p.uniform(2.8, 4.0))), slant=float(p.rng.uniform(0.1, 0.4)))
    if p.chance(f.fill):
        line = f.value(ts.name(), half + p.mm(p.uniform(2, 15)), p.right, y + f.size * 1.5 + sig_hand.size * 1.3,
                       sig_hand)
        if line:
            c.region("form_field", [line], pad=1.0)
