"""Till receipts: a narrow roll of thermal paper, monospace or narrow print, mostly capitals, prices
right-aligned under a shop's header, totals, payment and a footer.

The paper is 58 or 80 mm wide and as long as what is printed on it (:func:`paper`); the page type
``receipt`` of :mod:`docrec.synth.generate` draws it, usually through the ``thermal`` process of
:mod:`docrec.synth.degrade` (faded, streaked print).
"""

from __future__ import annotations

import numpy as np

from docrec.pages import Line
from docrec.synth import fonts
from docrec.synth.fonts import FontSpec
from docrec.synth.layouts import Sheet, print_lines

#: Narrow printed faces a till uses besides monospace ones (condensed sans).
NARROW = ("NimbusSansNarrow", "texgyreheroscn", "YanoneKaffeesatz")

_HEAD = {"en": ["TAX INVOICE", "RECEIPT", "SALES RECEIPT", "CASH SALE", "SIMPLIFIED TAX INVOICE", "INVOICE"],
         "fr": ["TICKET DE CAISSE", "FACTURE", "REÇU", "TICKET CLIENT", "FACTURE SIMPLIFIÉE"]}
_REG = {"en": ["GST REG NO", "VAT NO", "CO. REG NO", "TAX ID", "ABN", "GST ID"],
        "fr": ["SIRET", "TVA INTRA", "RCS", "N° TVA", "APE"]}
_META = {"en": ["CASHIER", "TABLE", "TERMINAL", "RECEIPT NO", "BILL NO", "DOC NO", "SLIP NO", "COUNTER"],
         "fr": ["CAISSE", "CAISSIER", "TABLE", "TICKET N°", "VENDEUR", "TERMINAL"]}
_GOODS = {"en": ["MILK", "BREAD", "EGGS", "RICE", "SUGAR", "COFFEE", "TEA", "WATER", "CHICKEN", "NOODLES",
                 "BATTERY", "PEN", "NOTEBOOK", "TAPE", "GLUE", "SOAP", "TISSUE", "SHAMPOO", "JUICE", "CAKE",
                 "SANDWICH", "BURGER", "FRIES", "SALAD", "PLASTIC BAG", "SCREW", "BOLT", "PAINT", "BRUSH",
                 "CABLE", "CHARGER", "ENVELOPE", "FOLDER", "CANDY", "CHOCOLATE", "BISCUIT", "OIL", "FLOUR"],
          "fr": ["LAIT", "PAIN", "OEUFS", "RIZ", "SUCRE", "CAFÉ", "THÉ", "EAU MINÉRALE", "POULET", "PÂTES",
                 "PILES", "STYLO", "CAHIER", "RUBAN", "COLLE", "SAVON", "MOUCHOIRS", "JUS D'ORANGE", "GÂTEAU",
                 "CROISSANT", "BAGUETTE", "FROMAGE", "JAMBON", "SALADE", "SAC", "VIS", "PEINTURE", "PINCEAU",
                 "CÂBLE", "CHARGEUR", "ENVELOPPES", "CHEMISE", "BONBONS", "CHOCOLAT", "BISCUITS", "HUILE"]}
_TOTALS = {"en": ["SUBTOTAL", "TOTAL", "GST", "TAX", "ROUNDING", "CASH", "CHANGE", "TOTAL INCL. GST",
                  "TOTAL SALES", "NET TOTAL", "VISA", "MASTERCARD", "DISCOUNT"],
           "fr": ["SOUS-TOTAL", "TOTAL", "TVA", "TOTAL TTC", "TOTAL HT", "ESPÈCES", "RENDU", "CB", "REMISE",
                  "MONTANT DÛ"]}
_FOOT = {"en": ["THANK YOU", "PLEASE COME AGAIN", "GOODS SOLD ARE NOT RETURNABLE", "THANK YOU FOR SHOPPING",
                "KEEP THIS RECEIPT FOR EXCHANGE", "HAVE A NICE DAY", "PRICES INCLUSIVE OF GST",
                "WWW.{site}.COM", "OPEN DAILY {hours}"],
         "fr": ["MERCI DE VOTRE VISITE", "À BIENTÔT", "CONSERVEZ VOTRE TICKET", "BONNE JOURNÉE",
                "ÉCHANGE SOUS 15 JOURS AVEC CE TICKET", "TVA INCLUSE", "WWW.{site}.FR", "OUVERT 7J/7 {hours}"]}


def paper(rng: np.random.Generator) -> tuple[float, float]:
    """A roll's width and a receipt's length in millimetres."""
    return (58.0 if rng.random() < 0.4 else 80.0), float(rng.uniform(110, 260))


def receipt_font(p: Sheet) -> FontSpec:
    """Mostly monospace (thermal and dot-matrix tills), else a narrow sans."""
    if p.chance(0.7):
        return fonts.choose(p.rng, "mono", bold=p.chance(0.15))
    pool = [f for f in fonts.FONTS if f.family in NARROW and not f.italic and not f.bold and fonts.allowed(f)]
    return pool[int(p.rng.integers(len(pool)))] if pool else fonts.choose(p.rng, "sans")


def receipt_page(p: Sheet) -> None:
    """One till receipt on a narrow page (the sheet's paper is the roll)."""
    c, ts, rng = p.canvas, p.text, p.rng
    p.left, p.right = p.mm(p.uniform(2.5, 6)), c.width - p.mm(p.uniform(2.5, 6))
    p.top, p.bottom = p.mm(p.uniform(4, 12)), c.height - p.mm(p.uniform(4, 10))
    p.caps = max(p.caps, p.uniform(0.8, 1.0))  # tills print capitals
    font = receipt_font(p)
    size = p.pt(p.uniform(7.0, 9.5)) if (p.right - p.left) > p.mm(60) else p.pt(p.uniform(6.0, 8.0))
    lead = size * p.uniform(1.15, 1.45)
    y = p.top + size
    bold = fonts.choose(rng, font.style, bold=True, like=font)
    big = round(size * p.uniform(1.2, 1.8))

    def block(texts: list[str], f: FontSpec = font, s: int = size, align: str = "left") -> list[Line]:
        nonlocal y
        lines, y = print_lines(p, texts, f, s, p.left, p.right, y, s * lead / size, align=align)
        return lines

    head = block([ts.company()], bold, big, "center")
    head += block(ts.address() + [f"TEL: {ts.phone()}" if ts.lang == "en" else f"TÉL. {ts.phone()}"],
                  align="center")
    if p.chance(0.7):
        head += block([f"{ts.pick(_REG[ts.lang])}: {_digits(rng, 8, 14)}"], align="center")
    c.region("printed", head)
    y += lead * 0.5
    title = block([ts.pick(_HEAD[ts.lang])], bold if p.chance(0.5) else font, size, "center")
    meta = block([f"{ts.word('date').upper()}: {ts.date()} {ts.time()}"]
                 + [f"{ts.pick(_META[ts.lang])}: {_meta_value(ts, rng)}" for _ in range(int(rng.integers(1, 4)))])
    c.region("printed", title + meta)
    y = _rule(p, y, size) + lead
    items: list[Line] = []
    total = 0.0
    for _ in range(int(rng.integers(2, 14))):
        name = ts.pick(_GOODS[ts.lang]) if p.chance(0.7) else ts.item()
        qty = int(rng.choice([1, 1, 1, 1, 2, 2, 3, 4, 6, 10]))
        unit = float(np.exp(rng.uniform(np.log(0.3), np.log(80.0))))
        total += qty * unit
        price = ts.money(qty * unit, currency=False)
        if p.chance(0.3):
            name = f"{_digits(rng, 4, 13)} {name}"  # an article code first
        if y > p.bottom:
            break
        row, _ = print_lines(p, [name], font, size, p.left, p.right - size * 5, y, lead, wrap=False)
        amount, y2 = print_lines(p, [price + (" " + ts.pick(["SR", "ZR", "T", "A", "B", "*"]) if p.chance(0.3)
                                              else "")], font, size, p.left, p.right, y, lead, align="right")
        items += row + amount
        y = y2 if amount else y + lead
        if qty > 1 and p.chance(0.6):
            items += block([f"  {qty} X {ts.money(unit, currency=False)}"])
    c.region("printed", items)
    y = _rule(p, y - lead * 0.4, size) + lead
    totals: list[Line] = []
    rate = float(rng.choice([0.0, 5.5, 6.0, 7.0, 10.0, 20.0]))
    labels = ts.pick([["SUBTOTAL", "GST", "TOTAL"], ["TOTAL", "CASH", "CHANGE"], ["TOTAL INCL. GST", "ROUNDING",
                      "CASH"], ["NET TOTAL", "TAX", "TOTAL SALES"]]) if ts.lang == "en" else \
        ts.pick([["TOTAL HT", "TVA", "TOTAL TTC"], ["TOTAL", "ESPÈCES", "RENDU"], ["SOUS-TOTAL", "REMISE", "TOTAL"],
                 ["TOTAL TTC", "CB", "MONTANT DÛ"]])
    for i, label in enumerate(labels):
        value = total * (rate / 100 if label in ("GST", "TAX", "TVA") else 1.0 + (i == 2) * rate / 100)
        f = bold if "TOTAL" in label and p.chance(0.5) else font
        text = label + (f" {rate:g}%" if label in ("GST", "TAX", "TVA") and p.chance(0.7) else "")
        lab, _ = print_lines(p, [text], f, size, p.left, p.right, y, lead)
        val, y = print_lines(p, [ts.money(value)], f, size, p.left, p.right, y, lead, align="right")
        totals += lab + val
    c.region("printed", totals)
    y += lead * p.uniform(0.5, 1.5)
    site = "".join(ch for ch in ts.company().upper() if ch.isalnum())[:12] or "SHOP"
    opens, closes = int(rng.integers(6, 10)), int(rng.integers(6, 11))
    hours = f"{opens}AM-{closes}PM" if ts.lang == "en" else f"{opens}H-{closes + 12}H"
    foot = [ts.pick(_FOOT[ts.lang]).format(site=site, hours=hours) for _ in range(int(rng.integers(1, 4)))]
    c.region("printed", block(foot, align="center"))
    c.trim(y + p.mm(p.uniform(4, 25)))  # torn off below the last line


def _digits(rng: np.random.Generator, low: int, high: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(low, high + 1))))


def _meta_value(ts, rng: np.random.Generator) -> str:
    r = rng.random()
    if r < 0.4:
        return _digits(rng, 3, 10)
    if r < 0.7:
        return ts.first_name().upper()
    return ts.code()


def _rule(p: Sheet, y: float, size: int) -> float:
    """A dashed or solid rule across the roll below baseline ``y``; returns its height."""
    yy = int(y - size * 0.2)
    thick = max(1, round(p.dpi / 200))
    if p.chance(0.6):
        dash = max(2, round(size * 0.4))
        for x in range(int(p.left), int(p.right) - dash, 2 * dash):
            p.canvas.graphics[yy:yy + thick, x:x + dash] = 255
    else:
        p.canvas.graphics[yy:yy + thick, int(p.left):int(p.right)] = 255
    return float(yy)
