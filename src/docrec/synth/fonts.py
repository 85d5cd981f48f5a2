"""The fonts shipped in ``data/fonts``: which are printed or handwriting, sizing, glyph coverage."""

from __future__ import annotations

import contextlib
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path

import numpy as np
from PIL import ImageFont

FONT_DIR = Path(__file__).resolve().parents[3] / "data" / "fonts"

#: Stand-ins for characters a font lacks; each keeps the transcription true to the ink.
SUBSTITUTES = {"€": "EUR", "œ": "oe", "Œ": "OE", "’": "'", "‘": "'", "–": "-", "—": "-", "«": '"', "»": '"',
               "…": "..."}


@dataclass(frozen=True)
class FontSpec:
    """One font file and what it is used for."""

    path: str  # relative to FONT_DIR
    style: str  # serif, sans, mono or hand
    bold: bool = False
    italic: bool = False
    caps_only: bool = False  # lower case maps to capital glyphs: only upper-case text is honest
    exclude: str = ""  # characters whose glyph is not what the code point means

    @property
    def family(self) -> str:
        """The face's family, shared by its cuts: the file name up to its first hyphen."""
        return Path(self.path).stem.split("-")[0]


_BOLD = re.compile(r"bold|bd|demi|heavy|black", re.IGNORECASE)
_ITALIC = re.compile(r"italic|ita$|oblique|condit$", re.IGNORECASE)

#: Printed faces, by file pattern (under FONT_DIR) and style; weight and slant are read from the name.
PRINTED: tuple[tuple[str, str], ...] = (
    ("dejavu/DejaVuSerif.ttf", "serif"), ("dejavu/DejaVuSans.ttf", "sans"), ("dejavu/DejaVuSansMono.ttf", "mono"),
    ("liberation/LiberationSerif-*.ttf", "serif"), ("liberation/LiberationSans-*.ttf", "sans"),
    ("liberation/LiberationMono-*.ttf", "mono"),
    ("texgyre/texgyre{bonum,pagella,schola,termes}-*.otf", "serif"),
    ("texgyre/texgyre{adventor,heros,heroscn}-*.otf", "sans"), ("texgyre/texgyrecursor-*.otf", "mono"),
    ("urw-base35/{C059,P052,NimbusRoman,URWBookman}-*.otf", "serif"),
    ("urw-base35/{NimbusSans,NimbusSansNarrow,URWGothic}-*.otf", "sans"), ("urw-base35/NimbusMonoPS-*.otf", "mono"),
    ("courier-prime/*.otf", "mono"),
    ("tlwg/{TlwgTypewriter,TlwgMono}*.ttf", "mono"), ("tlwg/Kinnari*.ttf", "serif"),
    ("tlwg/{Umpush,Sawasdee}*.ttf", "sans"),
    ("cabin/*.otf", "sans"), ("league-spartan/*.otf", "sans"), ("quicksand/*.ttf", "sans"),
    ("yanone-kaffeesatz/*.otf", "sans"), ("oxygen/Oxygen-Sans*.ttf", "sans"), ("oxygen/OxygenMono*.ttf", "mono"),
    ("mononoki/*.ttf", "mono"), ("anonymous-pro/*.ttf", "mono"), ("inconsolata/*.otf", "mono"),
    ("go/Go-{Regular,Bold,Italic,Bold-Italic,Medium,Medium-Italic}.ttf", "sans"), ("go/Go-Mono*.ttf", "mono"),
    ("caladea/*.ttf", "serif"),
    ("adf/{Accanthis,Baskervald,Berenis,Ikarius,Libris,Oldania,Romande,Tribun}*.otf", "serif"),
    ("adf/Verana-*.otf", "serif"),
    ("adf/{Gillius,Irianis,Switzera,Universalis}*.otf", "sans"), ("adf/VeranaSans-*.otf", "sans"),
)

#: Handwriting faces, each listed with what it can honestly write.
HANDS: tuple[FontSpec, ...] = (
    FontSpec("dkg-handwriting/dkg.ttf", "hand"),
    FontSpec("breip/Breip.ttf", "hand"),
    FontSpec("kristi/Kristi.ttf", "hand"),
    FontSpec("dancingscript/DancingScript-Regular.otf", "hand"),
    FontSpec("dancingscript/DancingScript-Bold.otf", "hand", bold=True),
    FontSpec("tlwg/Purisa.ttf", "hand"),
    FontSpec("tlwg/Purisa-Oblique.ttf", "hand", italic=True),
    FontSpec("tlwg/Purisa-Bold.ttf", "hand", bold=True),
    FontSpec("comic-neue/ComicNeue-Regular.otf", "hand"),
    FontSpec("comic-neue/ComicNeue-Italic.otf", "hand", italic=True),
    FontSpec("humor-sans/Humor-Sans.ttf", "hand", caps_only=True, exclude="€"),  # its euro is a face
    FontSpec("bwht/BecauseWeBuild-Regular.otf", "hand", caps_only=True),
    FontSpec("bwht/BecauseWeConnect-Regular.otf", "hand", caps_only=True),
    FontSpec("bwht/BecauseWeCreate-Regular.otf", "hand", caps_only=True),
    FontSpec("bwht/BecauseWeLearn-Regular.otf", "hand", caps_only=True),
    FontSpec("bwht/BecauseWeMentor-Regular.otf", "hand", caps_only=True),
    FontSpec("bwht/BecauseWeOrganize-Regular.otf", "hand", caps_only=True),
    # Google Fonts' handwriting category (as packaged on PyPI by fontpkg) and Debian's script fonts.
    FontSpec("caveat/Caveat.ttf", "hand"),  # a variable font: its default (regular) instance
    FontSpec("delius/Delius-Regular.ttf", "hand"),
    FontSpec("great-vibes/GreatVibes-Regular.ttf", "hand"),  # a copperplate round hand
    FontSpec("indie-flower/IndieFlower-Regular.ttf", "hand"),
    FontSpec("kalam/Kalam-Light.ttf", "hand"),
    FontSpec("kalam/Kalam-Regular.ttf", "hand"),
    FontSpec("kalam/Kalam-Bold.ttf", "hand", bold=True),
    FontSpec("satisfy/Satisfy-Regular.ttf", "hand"),
    FontSpec("shadows-into-light/ShadowsIntoLight.ttf", "hand"),
    FontSpec("yellowtail/Yellowtail-Regular.ttf", "hand"),
    FontSpec("zeyada/Zeyada.ttf", "hand"),
    FontSpec("permanent-marker/PermanentMarker-Regular.ttf", "hand", caps_only=True),
    FontSpec("ecolier-court/Ecolier-court.ttf", "hand"),  # French school cursive (ecriture scolaire)
    FontSpec("havana/Havana-Regular.otf", "hand"),
    FontSpec("kaushanscript/KaushanScript-Regular.otf", "hand"),
    FontSpec("rufscript/Rufscript010.ttf", "hand"),
    FontSpec("sjfonts/Delphine.ttf", "hand"),
    FontSpec("sjfonts/SteveHand.ttf", "hand"),
    # Debian's fonts-dustin, -lobster(two), -leckerli-one, -staypuft, -aenigma and PyPI's fontpkg-pacifico:
    # print hands and pen scrawls, joined brush scripts.
    FontSpec("dustin/Domestic_Manners.ttf", "hand"),
    FontSpec("dustin/Junkyard.ttf", "hand"),
    FontSpec("dustin/PenguinAttack.ttf", "hand"),
    FontSpec("lobster/Lobster.otf", "hand"),
    FontSpec("lobster/LobsterTwo-Regular.otf", "hand"),
    FontSpec("lobster/LobsterTwo-Bold.otf", "hand", bold=True),
    FontSpec("lobster/LobsterTwo-Italic.otf", "hand", italic=True),
    FontSpec("leckerli-one/LeckerliOne-Regular.ttf", "hand"),
    FontSpec("staypuft/StayPuft.ttf", "hand"),
    FontSpec("pacifico/Pacifico-Regular.ttf", "hand"),
    FontSpec("aenigma/aescrawl.ttf", "hand"),
    FontSpec("aenigma/madscrwl.ttf", "hand"),
    FontSpec("aenigma/jmacscrl.ttf", "hand"),
    FontSpec("aenigma/roughday.ttf", "hand"),
    FontSpec("aenigma/handmeds.ttf", "hand"),
    FontSpec("aenigma/hairball.ttf", "hand"),
)


def _braces(pattern: str) -> list[str]:
    """``a/{x,y}*.ttf`` -> ``a/x*.ttf``, ``a/y*.ttf`` (glob has no braces)."""
    m = re.search(r"\{([^}]*)\}", pattern)
    if not m:
        return [pattern]
    return [q for alt in m.group(1).split(",") for q in _braces(pattern[: m.start()] + alt + pattern[m.end():])]


def _printed() -> tuple[FontSpec, ...]:
    specs = []
    for pattern, style in PRINTED:
        files = sorted({f for q in _braces(pattern) for f in FONT_DIR.glob(q)})
        for f in files:
            cut = f.stem.split("-", 1)[1] if "-" in f.stem else ""  # Bold, BdIta, DemiOblique, Bold-Italic
            specs.append(FontSpec(f.relative_to(FONT_DIR).as_posix(), style, bold=bool(_BOLD.search(cut)),
                                  italic=bool(_ITALIC.search(cut))))
    return tuple(specs)


FONTS: tuple[FontSpec, ...] = _printed() + HANDS

_PROBE_SIZE = 48


@lru_cache(maxsize=512)
def load(spec: FontSpec, size: int) -> ImageFont.FreeTypeFont:
    """The font at an integer pixel size (basic layout: same glyphs on every machine)."""
    path = FONT_DIR / spec.path
    if not path.is_file():
        raise FileNotFoundError(f"font {path} is missing: data/fonts must hold the fonts listed in "
                                "docrec.synth.fonts.FONTS")
    return ImageFont.truetype(str(path), max(1, int(size)), layout_engine=ImageFont.Layout.BASIC)


@cache
def x_ratio(spec: FontSpec) -> float:
    """Height of the small letters above the baseline, as a fraction of the font size (capitals in
    caps-only fonts). Fonts differ widely; the median over several letters ignores their flourishes."""
    font = load(spec, 100)
    return float(np.median([-font.getbbox(ch, anchor="ls")[1] for ch in "acemnorsuvwxz"])) / 100.0


def size_for_x(spec: FontSpec, x_px: float) -> int:
    """Font size whose 'x' is ``x_px`` tall."""
    return max(4, round(x_px / x_ratio(spec)))


def missing(spec: FontSpec, text: str) -> str:
    """The characters of ``text`` the font cannot draw."""
    return "".join(sorted({ch for ch in text if not has_glyph(spec, ch)}))


@cache
def _notdef(spec: FontSpec) -> tuple[tuple[int, int], bytes]:
    mask = load(spec, _PROBE_SIZE).getmask("\U0010fffd")  # a private-use code point: always the .notdef box
    return mask.size, bytes(mask)


@cache
def has_glyph(spec: FontSpec, char: str) -> bool:
    """Whether the font draws ``char`` as a real glyph (not the .notdef box, not blank)."""
    if char == " ":
        return True
    if char in spec.exclude or char.isspace() or unicodedata.category(char).startswith("C"):
        return False
    mask = load(spec, _PROBE_SIZE).getmask(char)
    if mask.getbbox() is None:  # some fonts map missing letters to an empty glyph
        return False
    return (mask.size, bytes(mask)) != _notdef(spec)


def fit_text(spec: FontSpec, text: str) -> str:
    """``text`` as the font can honestly draw it: upper-cased for caps-only fonts, missing glyphs
    replaced by a stand-in (EUR, oe, unaccented capital) or dropped, spaces collapsed."""
    text = unicodedata.normalize("NFC", text)
    if spec.caps_only:
        text = text.upper()
    out = []
    for ch in text:
        if has_glyph(spec, ch):
            out.append(ch)
            continue
        sub = SUBSTITUTES.get(ch)
        if sub is None:
            base = unicodedata.normalize("NFD", ch)[0]  # É -> E: block capitals often drop accents
            sub = base if base != ch else ""
        out.append("".join(c for c in sub if has_glyph(spec, c)))
    return " ".join("".join(out).split())


#: The printed families :func:`choose` draws from (None: all); set with :func:`only_families`.
_FAMILIES: frozenset[str] | None = None


def printed_families() -> dict[str, set[str]]:
    """Each printed family and the styles its cuts have."""
    out: dict[str, set[str]] = {}
    for f in FONTS:
        if f.style != "hand":
            out.setdefault(f.family, set()).add(f.style)
    return out


def check_families(families: Iterable[str]) -> frozenset[str]:
    """``families`` as a set, if every one is a printed family and together they cover serif, sans and mono."""
    known, wanted = printed_families(), frozenset(families)
    unknown = sorted(wanted - set(known))
    if unknown:
        raise ValueError(f"unknown font family {unknown[0]!r}; printed families: {', '.join(sorted(known))}")
    missing = sorted({"serif", "sans", "mono"} - {st for fam in wanted for st in known[fam]})
    if missing:
        raise ValueError(f"the font families {', '.join(sorted(wanted))} have no {' or '.join(missing)} face: "
                         f"every page type needs serif, sans and mono faces")
    return wanted


@contextlib.contextmanager
def only_families(families: Iterable[str] | None):
    """Within the block, printed text is set in these families only (None: all): few faces for the
    start of a curriculum. Handwriting faces are not affected."""
    global _FAMILIES
    before, _FAMILIES = _FAMILIES, None if families is None else check_families(families)
    try:
        yield
    finally:
        _FAMILIES = before


def allowed(spec: FontSpec) -> bool:
    """Whether ``spec`` may be drawn now (a handwriting face, or a printed one of the allowed families)."""
    return _FAMILIES is None or spec.style == "hand" or spec.family in _FAMILIES


def choose(rng: np.random.Generator, style: str, bold: bool = False, italic: bool = False,
           like: FontSpec | None = None) -> FontSpec:
    """A random printed font of ``style`` (serif, sans, mono); the regular cut where no bold/italic exists.
    ``like``: a cut of that font's family when it has one (a bold heading over its own body text)."""
    faces = [f for f in FONTS if allowed(f)]
    pool = [f for f in faces if f.style == style and f.bold == bold and f.italic == italic]
    if not pool:
        pool = [f for f in faces if f.style == style and not f.bold and not f.italic]
    if like is not None:
        pool = [f for f in pool if f.family == like.family and f.path != like.path] or pool
    return pool[int(rng.integers(len(pool)))]


def choose_hand(rng: np.random.Generator, caps_only: bool) -> FontSpec:
    """A random handwriting font: block capitals only, or mixed case."""
    pool = [f for f in FONTS if f.style == "hand" and f.caps_only == caps_only]
    return pool[int(rng.integers(len(pool)))]
