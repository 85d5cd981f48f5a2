"""Page layouts for printed documents (letters, invoices, reports) and handwritten pages.

Every layout draws onto a :class:`Canvas` in page pixels; sizes are given in points or
millimetres and converted with the page's dpi, so a page at any resolution looks the same.
Blocks stop at the bottom margin: a line that would not fit is not drawn, never clipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from docrec.pages import Line
from docrec.synth import fonts, render
from docrec.synth.canvas import BLACK, PENS, Canvas, Color
from docrec.synth.fonts import FontSpec
from docrec.synth.render import HandStyle
from docrec.synth.text import TextSource


@dataclass
class Sheet:
    """A page being laid out: its canvas, text source, randomness, resolution and margins."""

    canvas: Canvas
    text: TextSource
    rng: np.random.Generator
    dpi: float
    left: float = 0.0
    right: float = 0.0
    top: float = 0.0
    bottom: float = 0.0
    darkness: float = 1.0  # toner: how dark the printed text comes out
    caps: float = 0.0  # chance a short printed line is set in capitals (a long one: a quarter of it)
    ink: Color = BLACK  # printing ink (forms are often printed in a colour)

    def pt(self, points: float) -> int:
        """Points to pixels."""
        return max(4, round(points * self.dpi / 72.0))

    def mm(self, millimetres: float) -> float:
        """Millimetres to pixels."""
        return millimetres * self.dpi / 25.4

    def uniform(self, low: float, high: float) -> float:
        """A float in [low, high)."""
        return float(self.rng.uniform(low, high))

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return bool(self.rng.random() < p)


def setup(canvas: Canvas, text: TextSource, rng: np.random.Generator, dpi: float) -> Sheet:
    """A sheet with random margins and toner."""
    p = Sheet(canvas, text, rng, dpi)
    p.left, p.right = p.mm(p.uniform(15, 25)), canvas.width - p.mm(p.uniform(15, 25))
    p.top, p.bottom = p.mm(p.uniform(12, 20)), canvas.height - p.mm(p.uniform(14, 22))
    p.darkness = p.uniform(0.8, 1.0)
    # Headings, labels and whole forms are often in capitals (a third of real form lines are).
    p.caps = 0.0 if p.chance(0.35) else p.uniform(0.1, 0.7)
    return p


def print_lines(p: Sheet, paragraphs: list[str], font: FontSpec, size: int, x0: float, x1: float, y: float,
                leading: float | None = None, align: str = "left", wrap: bool = True,
                bottom: float | None = None) -> tuple[list[Line], float]:
    """Set printed text between x0 and x1 from baseline ``y`` down to ``bottom`` (default: the margin);
    returns the lines and the next baseline."""
    leading = leading or size * 1.25
    bottom = p.bottom if bottom is None else bottom
    out: list[Line] = []
    for para in paragraphs:
        if p.caps and p.chance(p.caps if len(para) <= 40 else p.caps / 4):
            para = para.upper()
        para = fonts.fit_text(font, para)
        for s in filter(None, render.wrap_printed(para, font, size, x1 - x0) if wrap else [para]):
            r = render.render_printed(s, font, size)
            x = {"left": x0, "right": x1 - r.advance, "center": (x0 + x1 - r.advance) / 2}[align]
            if y > bottom or not p.canvas.fits(r, x, y):
                return out, y
            out.append(p.canvas.put(r, x, y, "printed", p.ink, p.darkness))
            y += leading
    return out, y


def hand_lines(p: Sheet, text: str, style: HandStyle, color: Color, x0: float, x1: float, y: float,
               leading: float, ruled: float | None = None) -> tuple[list[Line], float]:
    """Write ``text`` by hand between x0 and x1 from baseline ``y``; ``ruled`` snaps baselines to rules."""
    out: list[Line] = []
    for r in render.write_hand(text, style, p.rng, x1 - x0):
        x = x0 + p.rng.normal(0, 0.15 * style.size)  # a hand's margin drifts
        if y > p.bottom or not p.canvas.fits(r, x, y):
            break
        out.append(p.canvas.put(r, x, y, "handwritten", color, p.uniform(0.85, 1.0)))
        y += ruled if ruled else leading * p.uniform(0.95, 1.08)
    return out, y


def writer(p: Sheet, caps: float, x_mm: tuple[float, float] = (2.5, 3.6)) -> HandStyle:
    """A random writer whose small letters are ``x_mm`` tall; ``caps`` is the chance they write in capitals."""
    font = fonts.choose_hand(p.rng, caps_only=p.chance(caps))
    x_px = p.mm(p.uniform(*x_mm))
    if font.caps_only:  # a capital is taller than a small letter of the same hand
        x_px *= 1.4
    return render.random_hand(p.rng, font, x_px)


def printed_page(p: Sheet) -> None:
    """A printed document: a business letter, an invoice or a report."""
    [_letter, _invoice, _report][int(p.rng.choice(3, p=[0.35, 0.35, 0.3]))](p)


def handwritten_page(p: Sheet) -> None:
    """A handwritten letter or note, on plain or ruled paper, sometimes under a printed letterhead."""
    c, rng = p.canvas, p.rng
    style = writer(p, caps=0.12)
    pen = PENS[int(rng.integers(len(PENS)))]
    leading = style.size * p.uniform(1.5, 2.1)
    ruled = None
    y = p.top
    if p.chance(0.4):
        ruled = max(leading, p.mm(p.uniform(7.0, 9.0)))
        c.graphics_color = (0.55, 0.7, 0.9) if p.chance(0.7) else (0.6, 0.6, 0.6)
        for yy in np.arange(p.top + ruled, c.height - p.mm(8), ruled):
            cv2.line(c.graphics, (0, int(yy)), (c.width, int(yy)), 110, max(1, round(p.dpi / 150)), cv2.LINE_AA)
        if p.chance(0.6):
            xm = int(p.left - p.mm(4))
            cv2.line(c.graphics, (xm, 0), (xm, c.height), 140, max(1, round(p.dpi / 150)), cv2.LINE_AA)
    elif p.chance(0.3):
        y = _letterhead(p, fonts.choose(rng, "sans" if p.chance(0.5) else "serif"), y) + p.mm(8)

    def baseline(y: float) -> float:
        # On ruled paper the next baseline is the next rule below y (plus a pen's lift).
        return (np.ceil((y - p.top) / ruled) * ruled + p.top - 0.08 * style.size) if ruled else y

    y = baseline(y + style.size)
    ts = p.text
    if p.chance(0.6):
        x_right = p.right - p.mm(p.uniform(0, 30))
        head, y = hand_lines(p, ts.place_date(), style, pen, (p.left + x_right) / 2, x_right, y, leading, ruled)
        c.region("handwritten", head)
        y = baseline(y + (ruled or leading) * 0.5)
        blocks = [ts.salutation()] + [ts.paragraph(int(rng.integers(2, 6))) for _ in range(int(rng.integers(3, 7)))]
        blocks += [ts.closing(), ts.name()]
    else:
        blocks = []
        for _ in range(int(rng.integers(1, 4))):
            bullet = _bullet(rng)
            blocks += [ts.date() if p.chance(0.4) else ts.title()]
            blocks += [bullet + ts.note() for _ in range(int(rng.integers(3, 10)))]
    indent = p.mm(p.uniform(0, 12))
    for i, block in enumerate(blocks):
        x0 = p.left + (indent if i and len(block) > 60 else 0)
        lines, y = hand_lines(p, block, style, pen, x0, p.right, y, leading, ruled)
        c.region("handwritten", lines)
        if not lines:
            break
        y = baseline(y + (0 if ruled else leading * p.uniform(0.1, 0.5)))


def _bullet(rng: np.random.Generator) -> str:
    return ["- ", "* ", "", "> "][int(rng.integers(4))]


def _letterhead(p: Sheet, font: FontSpec, y: float) -> float:
    """Company name and address at the top; returns the baseline below it."""
    c, ts = p.canvas, p.text
    bold = fonts.choose(p.rng, font.style, bold=True, like=font)
    size = p.pt(p.uniform(14, 22))
    align = ["left", "center", "right"][int(p.rng.integers(3))]
    name, y = print_lines(p, [ts.company()], bold, size, p.left, p.right, y + size, align=align)
    small = p.pt(p.uniform(7.5, 9))
    info = [", ".join(ts.address())]
    if p.chance(0.7):
        info.append(f"{'Tél.' if ts.lang == 'fr' else 'Tel.'} {ts.phone()} - {ts.email()}")
    rest, y = print_lines(p, info, font, small, p.left, p.right, y - size * 0.3 + small, align=align)
    c.region("printed", name + rest)
    if p.chance(0.5):
        cv2.line(c.graphics, (int(p.left), int(y - small * 0.3)), (int(p.right), int(y - small * 0.3)), 255,
                 max(1, round(p.dpi / 100)))
    return y


def _body_font(p: Sheet) -> FontSpec:
    return fonts.choose(p.rng, ["serif", "sans", "mono"][int(p.rng.choice(3, p=[0.45, 0.4, 0.15]))])


def _letter(p: Sheet) -> None:
    c, ts, rng = p.canvas, p.text, p.rng
    font = _body_font(p)
    size = p.pt(p.uniform(9.5, 12))
    lead = size * p.uniform(1.15, 1.5)
    y = _letterhead(p, font, p.top) + p.mm(p.uniform(8, 20))
    x_addr = p.left if ts.locale == "en_US" else (p.left + p.right) / 2
    block, y = print_lines(p, [ts.name()] + ts.address(), font, size, x_addr, p.right, y, lead, wrap=False)
    c.region("printed", block)
    y += p.mm(p.uniform(4, 12))
    date, y = print_lines(p, [ts.place_date()], font, size, p.left, p.right, y, lead,
                          align="right" if p.chance(0.6) else "left")
    c.region("printed", date)
    y += lead * 0.8
    subject, y = print_lines(p, [ts.subject()], fonts.choose(rng, font.style, bold=True, like=font), size, p.left, p.right, y,
                             lead)
    c.region("printed", subject)
    y += lead * 0.8
    for block_text in [ts.salutation()] + [ts.paragraph(int(rng.integers(2, 6))) for _ in range(int(rng.integers(3, 7)))]:
        lines, y = print_lines(p, [block_text], font, size, p.left, p.right, y, lead)
        c.region("printed", lines)
        y += lead * p.uniform(0.3, 0.8)
    closing, y = print_lines(p, [ts.closing()], font, size, p.left, p.right, y, lead)
    c.region("printed", closing)
    signer = ts.name()
    if p.chance(0.7):
        style = writer(p, caps=0.0, x_mm=(3.0, 4.5))
        sig, y = hand_lines(p, signer, style, PENS[int(rng.integers(len(PENS)))], p.left + p.mm(p.uniform(0, 30)),
                            p.right, y + style.size * 1.2, style.size * 2)
        c.region("handwritten", sig)
    name, _ = print_lines(p, [signer], font, size, p.left, p.right, y + lead * 0.3, lead)
    c.region("printed", name)


def _invoice(p: Sheet) -> None:
    c, ts, rng = p.canvas, p.text, p.rng
    font = _body_font(p)
    bold = fonts.choose(rng, font.style, bold=True, like=font)
    size = p.pt(p.uniform(8.5, 11))
    lead = size * p.uniform(1.2, 1.45)
    y = _letterhead(p, font, p.top) + p.mm(p.uniform(6, 14))
    title_size = p.pt(p.uniform(16, 26))
    title, _ = print_lines(p, [ts.word("invoice")], bold, title_size, p.left, p.right, y + title_size, align="right")
    c.region("printed", title)
    meta = [f"{ts.word('number')} {ts.ref()}", f"{ts.word('date')} : {ts.date()}" if ts.lang == "fr"
            else f"{ts.word('date')}: {ts.date()}", f"{ts.word('customer')} {int(rng.integers(1000, 999999))}"]
    y_meta = y + title_size * 1.6 + size
    meta_lines, y_after_meta = print_lines(p, meta, font, size, p.left, p.right, y_meta, lead, align="right",
                                           wrap=False)
    c.region("printed", meta_lines)
    bill, y = print_lines(p, [ts.word("bill_to")], bold, size, p.left, (p.left + p.right) / 2, y_meta, lead)
    addr, y = print_lines(p, [ts.company(), ts.name()] + ts.address(), font, size, p.left, (p.left + p.right) / 2,
                          y, lead, wrap=False)
    c.region("printed", bill + addr)
    y = max(y, y_after_meta) + p.mm(p.uniform(6, 14))
    y, subtotal = _table(p, font, bold, size, y)
    y += lead
    x_label = p.left + (p.right - p.left) * 0.55
    rate = int(rng.choice([5, 10, 20]))
    totals: list[Line] = []
    for key, value in (("subtotal", subtotal), ("vat", subtotal * rate / 100), ("total", subtotal * (1 + rate / 100))):
        label = ts.word(key) + (f" {rate} %" if key == "vat" else "")
        f = bold if key == "total" else font
        lab, _ = print_lines(p, [label], f, size, x_label, p.right, y, lead)
        val, y = print_lines(p, [ts.money(value)], f, size, x_label, p.right, y, lead, align="right")
        totals += lab + val
    c.region("printed", totals)
    y += lead * 1.5
    small = p.pt(p.uniform(7, 8.5))
    foot, _ = print_lines(p, [ts.word("due"), f"{ts.word('bank')}: IBAN {ts.iban()}"], font, small, p.left, p.right,
                          max(y, p.bottom - 2.5 * small * 1.3), small * 1.3)
    c.region("printed", foot)


def _table(p: Sheet, font: FontSpec, bold: FontSpec, size: int, y: float) -> tuple[float, float]:
    """An invoice table with a ruled header; one printed line per cell. Returns the next baseline and the
    sum of the amounts shown."""
    c, ts, rng = p.canvas, p.text, p.rng
    width = p.right - p.left
    edges = [p.left, p.left + 0.5 * width, p.left + 0.62 * width, p.left + 0.8 * width, p.right]
    pad = p.mm(1.5)
    lead = size * p.uniform(1.5, 2.0)
    thick = max(1, round(p.dpi / 120))
    grid = p.chance(0.5)
    top = y
    rows = [[ts.word("description"), ts.word("qty"), ts.word("unit"), ts.word("amount")]]
    values = [0.0]
    for _ in range(int(rng.integers(3, 14))):
        qty, unit = int(ts.quantity()), round(float(np.exp(rng.uniform(np.log(2), np.log(900)))), 2)
        rows.append([ts.item(), str(qty), ts.money(unit, currency=False), ts.money(qty * unit, currency=False)])
        values.append(qty * unit)
    cells: list[Line] = []
    total = 0.0
    y += lead * 0.75
    for i, row in enumerate(rows):
        if y + lead > p.bottom - p.mm(30):
            break
        total += values[i]
        for j, cell in enumerate(row):
            align = "left" if j == 0 else "right"
            lines, _ = print_lines(p, [cell], bold if i == 0 else font, size, edges[j] + pad, edges[j + 1] - pad, y,
                                   align=align, wrap=False)
            cells += lines
        if i == 0 or grid:
            yl = int(y + lead * 0.35)
            cv2.line(c.graphics, (int(p.left), yl), (int(p.right), yl), 255, thick)
        y += lead
    bottom = int(y - lead * 0.65)
    cv2.line(c.graphics, (int(p.left), int(top)), (int(p.right), int(top)), 255, thick)
    cv2.line(c.graphics, (int(p.left), bottom), (int(p.right), bottom), 255, thick)
    if grid:
        for x in edges:
            cv2.line(c.graphics, (int(x), int(top)), (int(x), bottom), 255, thick)
    c.region("printed", cells, boxes=((p.left, top, p.right, bottom),))
    return y, total


def _report(p: Sheet) -> None:
    c, ts, rng = p.canvas, p.text, p.rng
    font = _body_font(p)
    head_font = fonts.choose(rng, "sans" if p.chance(0.6) else font.style, bold=True)
    size = p.pt(p.uniform(9, 11.5))
    lead = size * p.uniform(1.15, 1.4)
    small = p.pt(p.uniform(7, 8.5))
    header, y = print_lines(p, [f"{ts.company()} - {ts.word('report')} {ts.ref()}"], font, small, p.left, p.right,
                            p.top + small, align="right" if p.chance(0.5) else "left")
    c.region("printed", header)
    cv2.line(c.graphics, (int(p.left), int(y - small * 0.5)), (int(p.right), int(y - small * 0.5)), 255,
             max(1, round(p.dpi / 150)))
    title_size = p.pt(p.uniform(15, 24))
    title, y = print_lines(p, [ts.title()], head_font, title_size, p.left, p.right, y + title_size * 1.5,
                           title_size * 1.2)
    c.region("printed", title)
    byline, y = print_lines(p, [f"{ts.name()}, {ts.date()}"], fonts.choose(rng, "serif", italic=True), size,
                            p.left, p.right, y + lead * 0.3, lead)
    c.region("printed", byline)
    y += lead
    footer_y = p.bottom
    page_no, _ = print_lines(p, [f"{ts.word('page')} {int(rng.integers(1, 40))}"], font, small, p.left, p.right,
                             footer_y, align="center")
    c.region("printed", page_no)
    columns = 2 if p.chance(0.5) else 1
    gutter = p.mm(p.uniform(5, 10))
    col_w = (p.right - p.left - gutter * (columns - 1)) / columns
    bottom = footer_y - small * 2
    for k in range(columns):
        x0 = p.left + k * (col_w + gutter)
        yc = y
        while yc < bottom - lead:
            if p.chance(0.3):
                heading, yc = print_lines(p, [ts.title()], head_font, round(size * 1.15), x0, x0 + col_w,
                                          yc + lead * 0.5, lead, bottom=bottom)
                c.region("printed", heading)
            lines, yc = print_lines(p, [ts.paragraph(int(rng.integers(2, 6)))], font, size, x0, x0 + col_w, yc, lead,
                                    bottom=bottom)
            if not lines:
                break
            c.region("printed", lines)
            yc += lead * p.uniform(0.3, 0.9)
