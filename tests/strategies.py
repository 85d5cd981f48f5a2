"""Hypothesis strategies for random pages: odd ids, any text, thin, touching and self-crossing polygons.

Shared by the property tests of the PAGE-XML and ALTO writers.
"""

from __future__ import annotations

from hypothesis import strategies as st

from docrec.pages import Line, Page, Point, Region, polygon_area


def box(x0, y0, x1, y1) -> list[Point]:
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


#: Ids the writers make up themselves: input ids equal to them must keep theirs.
MADE_UP = ["kind_1", "block_type_1", "line_type_1", "page_1", "docrec_processing", "reading_order", "ro_1", "x_block"]
IDS = st.one_of(st.sampled_from(["1", "line 1", "a:b", "r0", "l0", "x", "é", "-", " ", *MADE_UP]),
                st.text(alphabet="ab1 :_.-é", min_size=1, max_size=6))
CHARS = st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\ufffe\uffff")
TEXT = st.one_of(st.text(alphabet=CHARS, max_size=30), st.text(alphabet=" ab", max_size=12))
KIND = st.one_of(st.sampled_from(["printed", "handwritten", "form_field"]), st.text(alphabet=CHARS, min_size=1,
                                                                                        max_size=8))
LABELS = st.one_of(st.none(), st.sampled_from(["MainZone", "question", "a b:c"]),
                   st.text(alphabet=CHARS, min_size=1, max_size=8))


@st.composite
def polygons(draw, width: int, height: int) -> list[Point]:
    x0, y0 = draw(st.floats(0, width - 1)), draw(st.floats(0, height - 1))
    w, h = draw(st.floats(0.001, width - x0)), draw(st.floats(0.001, height - y0))
    shape = draw(st.sampled_from(["box", "thin", "touching", "random"]))
    if shape == "thin":  # thinner than the 0.01 px the writer keeps
        return box(x0, y0, x0 + w, y0 + draw(st.floats(1e-6, 0.02)))
    if shape == "touching":  # two triangles meeting in one vertex
        return [(x0, y0), (x0 + w, y0), (x0 + w / 2, y0 + h / 2), (x0 + w, y0 + h), (x0, y0 + h),
                (x0 + w / 2, y0 + h / 2)]
    if shape == "random":  # possibly self-intersecting
        pts = st.tuples(st.floats(0, width), st.floats(0, height))
        return draw(st.lists(pts, min_size=3, max_size=8).filter(lambda p: polygon_area(p) > 0))
    return box(x0, y0, x0 + w, y0 + h)


@st.composite
def pages(draw) -> Page:
    width, height = draw(st.integers(1, 3000)), draw(st.integers(1, 3000))
    region_ids = draw(st.lists(IDS, max_size=12, unique=True))
    regions = [Region(i, draw(polygons(width, height)), draw(KIND), draw(LABELS)) for i in region_ids]
    line_id = st.one_of(IDS, st.sampled_from(region_ids)) if region_ids else IDS  # shared with a region
    lines = []
    for i in draw(st.lists(line_id, max_size=12, unique=True)):
        poly = draw(polygons(width, height))
        baseline = draw(st.one_of(st.none(), st.lists(st.tuples(st.floats(0, width), st.floats(0, height)),
                                                      min_size=2, max_size=4)))
        region = draw(st.sampled_from([None, *region_ids]))
        conf = draw(st.one_of(st.none(), st.floats(0, 1)))
        lines.append(Line(i, poly, draw(TEXT), draw(KIND), baseline, region, draw(LABELS), conf))
    return Page("p.png", width, height, regions=regions, lines=lines)
