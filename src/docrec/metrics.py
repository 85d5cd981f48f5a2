"""Evaluation metrics: recognition, line detection, end to end and segmentation.

Text is compared after Unicode NFC; a page whose transcriptions do not keep the print's case
(``PageEvaluator.update(fold_case=True)``: SROIE's are upper case) is compared after
``str.casefold`` of both sides too, in every text metric. CER and WER are Levenshtein distance over the
reference length; WER tokens are ``str.split()`` words (punctuation stays attached to its
word). Corpus rates (what a report prints) sum distances and reference lengths over all
lines, so a long line weighs more than a short one.

Zero divisions in the functions follow one rule: ``0/0`` is perfect (error rate 0.0,
score 1.0) and ``x/0`` with ``x > 0`` is worst. So an empty reference gives CER 0.0 for
an empty prediction and 1.0 otherwise; ``detection_prf(0, 0, 0)`` is (1, 1, 1),
``detection_prf(0, 0, n)`` is (1, 0, 0) and ``detection_prf(0, n, 0)`` is (0, 1, 0).

Line matching is one-to-one at IoU >= threshold and maximum-cardinality: it maximises the
number of matched pairs, then their summed IoU (Hungarian algorithm,
``scipy.optimize.linear_sum_assignment``, run per connected group of candidate pairs). A
greedy by-IoU matching can match fewer lines. Polygon IoU is exact (shapely); bounding boxes
prune the pairs first, so pages with hundreds of lines stay fast.

:class:`PageEvaluator` keys (``compute()``), named ``<metric>`` for the total and
``<metric>/<kind>`` for a breakdown by line kind (``printed``, ``handwritten``, ...) and by
the kind of region holding the line (``form_field``: lines given with ``region``):

- ``n_pages``, ``n_gt_lines``, ``n_pred_lines``: counts;
- ``det_precision``, ``det_recall``, ``det_f1``: line detection; matching ignores kinds;
- ``e2e_precision``, ``e2e_recall``, ``e2e_f1``: a detected line counts when it matches a
  GT line and its text is exactly right; ``e2e_cer``: CER over the matched pairs only (read
  from the predicted boxes); ``e2e_cer_gt_quads``: the same lines read from their
  ground-truth boxes (with ``gt_line_preds``), so the cost of the predicted boxes shows;
- ``kind_acc``: share of matched pairs whose predicted kind equals the GT kind;
- ``baseline_dev``: over matched pairs that both have a baseline, the mean distance of the
  predicted baseline from the GT one, in GT line heights (:func:`baseline_deviation`);
- ``cer``, ``wer``, ``line_acc``: recognition on GT lines (``gt_line_preds``); ``len_ratio``: the
  characters read per GT character on those lines (below 1 the reader drops characters, as a CTC
  reader unsure of a script falls silent; above 1 it writes more than is there);
- ``bow_precision``, ``bow_recall``, ``bow_f1``: bag of words per page: the page's predicted
  words (``str.split()`` of every predicted line, NFC) against its GT words as multisets, hits
  summed over pages; no line has to match, so a dataset that cuts lines per entity (FUNSD) and
  a detector that cuts physical lines are scored alike;
- ``page_cer``: the page's predicted text against its GT text, each side's lines put in the
  same geometric reading order (:func:`reading_order`) and joined by spaces; edits over GT
  characters, summed over pages. Cutting a line in two costs nothing; a wrong order costs;
- ``seg_miou`` and ``seg_iou/<class>``: segmentation, over all pixels of all pages.

Breakdowns: precisions go by the PREDICTED kind (of all lines predicted as handwritten,
how many match a GT line), recalls, CER, WER, line accuracy and ``e2e_cer`` by the GT kind;
``<x>_f1/<kind>`` is the harmonic mean of those two. A key whose denominator is empty (no
GT line of a kind, no matched pair, no recognition outputs or class maps given, a class
absent from both maps) is left out rather than invented; the detection and end-to-end
totals are always present and follow :func:`detection_prf`.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import shapely
from rapidfuzz.distance import Levenshtein
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

#: A polygon as a sequence of [x, y] points or an (N, 2) array.
PolygonLike = Sequence[Sequence[float]] | np.ndarray

# Matching keeps pairs whose IoU is within this of the threshold, so an IoU of exactly
# 0.5 computed as 0.49999999999 still counts.
_IOU_EPS = 1e-9


# --- text -----------------------------------------------------------------------------


def normalize_text(text: str) -> str:
    """Unicode NFC, the form every comparison uses."""
    return unicodedata.normalize("NFC", text)


def char_edits(pred: str, ref: str) -> tuple[int, int]:
    """(Levenshtein distance, reference length) in characters, after NFC."""
    pred, ref = normalize_text(pred), normalize_text(ref)
    return Levenshtein.distance(pred, ref), len(ref)


def word_edits(pred: str, ref: str) -> tuple[int, int]:
    """(Levenshtein distance, reference length) in whitespace-separated words, after NFC."""
    pred_words, ref_words = normalize_text(pred).split(), normalize_text(ref).split()
    return Levenshtein.distance(pred_words, ref_words), len(ref_words)


def page_words(texts: Iterable[str]) -> Counter[str]:
    """The multiset of words of a page's lines (NFC, ``str.split()``)."""
    return Counter(w for t in texts for w in normalize_text(t).split())


def bow_counts(pred_texts: Iterable[str], gt_texts: Iterable[str]) -> tuple[int, int, int]:
    """(hits, predicted words, GT words) of one page's bags of words."""
    pred, gt = page_words(pred_texts), page_words(gt_texts)
    return sum((pred & gt).values()), sum(pred.values()), sum(gt.values())


def page_text(lines: Sequence[Any]) -> str:
    """A page's text: its lines' texts in :func:`reading_order`, joined by single spaces."""
    views = [_view(x) for x in lines]
    return " ".join(" ".join(normalize_text(views[i].text).split())
                    for i in reading_order([v.polygon for v in views]) if views[i].text.strip())


def reading_order(polygons: Sequence[PolygonLike]) -> list[int]:
    """Indices of line polygons top to bottom, rows left to right.

    A line joins the current row when its vertical centre lies above the row's first line's
    centre plus half that line's height; rows are sorted by x. The same rule on both sides of
    a comparison, so neither side's own order (FUNSD lists entities, not reading order) counts.
    """
    boxes = []
    for i, polygon in enumerate(polygons):
        pts = np.asarray(polygon, dtype=float)
        y0, y1 = pts[:, 1].min(), pts[:, 1].max()
        boxes.append(((y0 + y1) / 2, y1 - y0, pts[:, 0].min(), i))
    boxes.sort()
    order, row, limit = [], [], -math.inf
    for cy, h, x0, i in boxes:
        if row and cy > limit:
            order += [j for _, j in sorted(row)]
            row = []
        if not row:
            limit = cy + h / 2
        row.append((x0, i))
    return order + [j for _, j in sorted(row)]


def _error_rate(distance: float, length: float) -> float:
    if length > 0:
        return distance / length
    return 0.0 if distance == 0 else 1.0


def _score(hits: float, total: float) -> float:
    return hits / total if total > 0 else 1.0


def _hmean(a: float, b: float) -> float:
    return 2 * a * b / (a + b) if a + b > 0 else 0.0


def cer(pred: str, ref: str) -> float:
    """Character error rate of one line; empty reference: 0.0 if pred is empty else 1.0."""
    return _error_rate(*char_edits(pred, ref))


def wer(pred: str, ref: str) -> float:
    """Word error rate of one line; empty reference: 0.0 if pred has no words else 1.0."""
    return _error_rate(*word_edits(pred, ref))


def _corpus(pairs: Iterable[tuple[str, str]], edits) -> float:
    dist = length = 0
    for pred, ref in pairs:
        d, n = edits(pred, ref)
        dist, length = dist + d, length + n
    return _error_rate(dist, length)


def corpus_cer(pairs: Iterable[tuple[str, str]]) -> float:
    """CER over (pred, ref) pairs: summed distances over summed reference lengths."""
    return _corpus(pairs, char_edits)


def corpus_wer(pairs: Iterable[tuple[str, str]]) -> float:
    """WER over (pred, ref) pairs: summed word distances over summed reference word counts."""
    return _corpus(pairs, word_edits)


def line_accuracy(pairs: Iterable[tuple[str, str]]) -> float:
    """Share of (pred, ref) pairs that are identical after NFC; 1.0 for no pairs."""
    hits = total = 0
    for pred, ref in pairs:
        hits += normalize_text(pred) == normalize_text(ref)
        total += 1
    return _score(hits, total)


# --- geometry and detection -----------------------------------------------------------


def _geometry(points: PolygonLike) -> shapely.Geometry:
    """A valid (Multi)Polygon; self-intersecting rings are repaired, degenerate ones are empty."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if len(pts) < 3:
        return shapely.Polygon()
    poly = shapely.Polygon(pts)
    if poly.is_valid:
        return poly
    # make_valid keeps both lobes of a bow-tie (buffer(0) drops one); it may also return
    # slivers as lines, which carry no area and are dropped.
    fixed = shapely.make_valid(poly)
    parts = [p for p in shapely.get_parts(fixed) if p.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(parts) if parts else shapely.Polygon()


def polygon_iou(a: PolygonLike, b: PolygonLike) -> float:
    """Exact intersection over union of two polygons (non-convex and self-intersecting ones too)."""
    ga, gb = _geometry(a), _geometry(b)
    inter = ga.intersection(gb).area
    union = ga.area + gb.area - inter
    return inter / union if union > 0 else 0.0


def _candidate_pairs(
    pred_polys: Sequence[PolygonLike], gt_polys: Sequence[PolygonLike], iou_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pred index, gt index, IoU) of every pair with IoU >= threshold and > 0."""
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))
    if not len(pred_polys) or not len(gt_polys):
        return empty
    pg = np.array([_geometry(p) for p in pred_polys], dtype=object)
    gg = np.array([_geometry(p) for p in gt_polys], dtype=object)
    pb, gb = np.nan_to_num(shapely.bounds(pg)), np.nan_to_num(shapely.bounds(gg))
    pa, ga = shapely.area(pg)[:, None], shapely.area(gg)[None, :]
    iw = np.minimum(pb[:, None, 2], gb[None, :, 2]) - np.maximum(pb[:, None, 0], gb[None, :, 0])
    ih = np.minimum(pb[:, None, 3], gb[None, :, 3]) - np.maximum(pb[:, None, 1], gb[None, :, 1])
    # The polygons' intersection is at most the boxes' intersection and the smaller area;
    # IoU grows with the intersection, so this bound prunes pairs that cannot reach it.
    inter_bound = np.minimum(np.clip(iw, 0, None) * np.clip(ih, 0, None), np.minimum(pa, ga))
    with np.errstate(divide="ignore", invalid="ignore"):
        iou_bound = inter_bound / (pa + ga - inter_bound)
    ii, jj = np.nonzero((inter_bound > 0) & (iou_bound >= iou_threshold - _IOU_EPS))
    if not len(ii):
        return empty
    inter = shapely.area(shapely.intersection(pg[ii], gg[jj]))
    iou = inter / (pa[ii, 0] + ga[0, jj] - inter)
    keep = (inter > 0) & (iou >= iou_threshold - _IOU_EPS)
    return ii[keep], jj[keep], iou[keep]


def match_lines(
    pred_polys: Sequence[PolygonLike], gt_polys: Sequence[PolygonLike], iou_threshold: float = 0.5
) -> list[tuple[int, int, float]]:
    """One-to-one (pred_idx, gt_idx, iou) matches at IoU >= threshold: most matches, then most IoU."""
    ii, jj, iou = _candidate_pairs(pred_polys, gt_polys, iou_threshold)
    if not len(ii):
        return []
    n_pred = len(pred_polys)
    # Pairs only compete inside a connected group of the candidate graph; solving each group
    # alone keeps the assignment problems tiny on large pages.
    graph = coo_matrix((np.ones(len(ii)), (ii, n_pred + jj)), shape=(n_pred + len(gt_polys),) * 2)
    _, labels = connected_components(graph, directed=False)
    group = labels[ii]
    order = np.argsort(group, kind="stable")
    matches: list[tuple[int, int, float]] = []
    for idx in np.split(order, np.flatnonzero(np.diff(group[order])) + 1):
        if len(idx) == 1:
            matches.append((int(ii[idx[0]]), int(jj[idx[0]]), float(iou[idx[0]])))
            continue
        rows, r = np.unique(ii[idx], return_inverse=True)
        cols, c = np.unique(jj[idx], return_inverse=True)
        # A bonus above the largest possible IoU sum makes one more match always win.
        bonus = min(len(rows), len(cols)) + 1.0
        weight = np.zeros((len(rows), len(cols)))
        weight[r, c] = bonus + iou[idx]
        pair_iou = np.zeros_like(weight)
        pair_iou[r, c] = iou[idx]
        for a, b in zip(*linear_sum_assignment(weight, maximize=True)):
            if weight[a, b] > 0:
                matches.append((int(rows[a]), int(cols[b]), float(pair_iou[a, b])))
    return sorted(matches)


def detection_prf(n_matched: int, n_pred: int, n_gt: int) -> tuple[float, float, float]:
    """(precision, recall, F1); an empty denominator gives 1.0 (nothing predicted, nothing to find)."""
    precision, recall = _score(n_matched, n_pred), _score(n_matched, n_gt)
    return precision, recall, _hmean(precision, recall)


# --- segmentation ---------------------------------------------------------------------


class ConfusionMatrix:
    """Pixel confusion matrix summed over many maps (rows: GT class, columns: predicted class)."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, pred_map: np.ndarray, gt_map: np.ndarray) -> None:
        """Add one pair of class maps; GT pixels equal to ``ignore_index`` are skipped."""
        pred, gt = np.asarray(pred_map), np.asarray(gt_map)
        if pred.shape != gt.shape:
            raise ValueError(f"class maps differ in shape: pred {pred.shape}, gt {gt.shape}")
        valid = gt != self.ignore_index
        g, p = gt[valid].astype(np.int64), pred[valid].astype(np.int64)
        for name, values in (("gt", g), ("pred", p)):
            if values.size and (values.min() < 0 or values.max() >= self.num_classes):
                raise ValueError(
                    f"{name} class map has values outside [0, {self.num_classes}) "
                    f"(min {values.min()}, max {values.max()}; ignore_index is {self.ignore_index})"
                )
        n = self.num_classes
        self.matrix += np.bincount(g * n + p, minlength=n * n).reshape(n, n)

    def merge(self, other: ConfusionMatrix) -> None:
        """Add another accumulator's counts (e.g. from another DDP rank)."""
        if other.matrix.shape != self.matrix.shape:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix

    def iou(self) -> np.ndarray:
        """Per-class IoU; NaN for a class absent from both GT and predictions."""
        tp = np.diag(self.matrix).astype(np.float64)
        union = self.matrix.sum(0) + self.matrix.sum(1) - tp
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, tp / union, np.nan)

    def mean_iou(self) -> float:
        """Mean IoU over the classes that occur; NaN when no pixel was counted."""
        iou = self.iou()
        present = ~np.isnan(iou)
        return float(iou[present].mean()) if present.any() else math.nan


def segmentation_iou(
    pred_map: np.ndarray, gt_map: np.ndarray, num_classes: int, ignore_index: int = 255
) -> tuple[np.ndarray, float]:
    """(per-class IoU with NaN for absent classes, mean over present classes) of one map pair."""
    cm = ConfusionMatrix(num_classes, ignore_index)
    cm.update(pred_map, gt_map)
    return cm.iou(), cm.mean_iou()


# --- the page evaluator ---------------------------------------------------------------


class _LineView(NamedTuple):
    polygon: PolygonLike
    text: str
    kind: str | None
    region: str | None = None
    baseline: PolygonLike | None = None

    @property
    def groups(self) -> tuple[str, ...]:
        """The breakdowns the line counts in: its kind and the kind of region holding it (e.g. form_field)."""
        return tuple(g for g in dict.fromkeys((self.kind, self.region)) if g is not None)


def _view(line: Any) -> _LineView:
    """Read a line given as a mapping (``kind`` or manifest-style ``type``, optional ``region`` kind) or an object."""
    if isinstance(line, Mapping):
        kind = line.get("kind", line.get("type"))
        return _LineView(line["polygon"], line.get("text") or "", kind, line.get("region"), line.get("baseline"))
    return _LineView(line.polygon, getattr(line, "text", "") or "", getattr(line, "kind", None),
                     baseline=getattr(line, "baseline", None))


def baseline_deviation(pred: PolygonLike, gt: PolygonLike, gt_polygon: PolygonLike, samples: int = 8) -> float:
    """Mean distance from ``samples`` points spread along the GT baseline to the predicted one,
    in units of the GT line's height (its polygon's area over the baseline's length)."""
    ref, hyp = shapely.LineString(np.asarray(gt, float)), shapely.LineString(np.asarray(pred, float))
    if ref.length <= 0:
        return math.nan
    points = [ref.interpolate(t, normalized=True) for t in (np.arange(samples) + 0.5) / samples]
    height = _geometry(gt_polygon).area / ref.length
    return float(np.mean([hyp.distance(p) for p in points])) / max(height, 1e-9)


class PageEvaluator:
    """Accumulates every metric over pages; ``compute()`` gives the flat dict described above."""

    def __init__(
        self, class_names: Sequence[str] = (), iou_threshold: float = 0.5, ignore_index: int = 255
    ) -> None:
        self.class_names = tuple(class_names)
        self.iou_threshold = iou_threshold
        self.confusion = ConfusionMatrix(len(self.class_names), ignore_index) if self.class_names else None
        self._seg_pages = 0
        # (quantity, kind) -> sum; kind None is the total over all lines.
        self._n: Counter[tuple[str, str | None]] = Counter()

    def _add(self, name: str, kind: str | tuple[str, ...] | None, value: int = 1) -> None:
        self._n[name, None] += value
        for k in (kind,) if isinstance(kind, str) else kind or ():
            self._n[name, k] += value

    def update(
        self,
        pred_lines: Sequence[Any],
        gt_lines: Sequence[Any],
        pred_class_map: np.ndarray | None = None,
        gt_class_map: np.ndarray | None = None,
        gt_line_preds: Sequence[str] | None = None,
        fold_case: bool = False,
    ) -> None:
        """Add one page: detected lines, GT lines, optional class maps and recognition on GT lines.

        ``fold_case``: the page's transcriptions ignore the print's case; every text is case-folded first."""
        preds, gts = [_view(x) for x in pred_lines], [_view(x) for x in gt_lines]
        if fold_case:
            preds = [v._replace(text=v.text.casefold()) for v in preds]
            gts = [v._replace(text=v.text.casefold()) for v in gts]
            gt_line_preds = None if gt_line_preds is None else [t.casefold() for t in gt_line_preds]
        if gt_line_preds is not None and len(gt_line_preds) != len(gts):
            raise ValueError(f"gt_line_preds has {len(gt_line_preds)} texts for {len(gts)} GT lines")
        if (pred_class_map is None) != (gt_class_map is None):
            raise ValueError("pass both pred_class_map and gt_class_map, or neither")
        if pred_class_map is not None and self.confusion is None:
            raise ValueError("class maps given but the evaluator was built without class_names")

        if pred_class_map is not None:  # first: it validates the maps before any count changes
            self.confusion.update(pred_class_map, gt_class_map)
            self._seg_pages += 1
        self._n["pages", None] += 1
        hits, n_pred_words, n_gt_words = bow_counts((p.text for p in preds), (g.text for g in gts))
        self._n["bow_hits", None] += hits
        self._n["bow_pred", None] += n_pred_words
        self._n["bow_gt", None] += n_gt_words
        page_dist, page_len = char_edits(page_text(preds), page_text(gts))
        self._n["page_dist", None] += page_dist
        self._n["page_len", None] += page_len
        for p in preds:
            self._add("pred", p.groups)
        for g in gts:
            self._add("gt", g.groups)

        for i, j, _ in match_lines([p.polygon for p in preds], [g.polygon for g in gts], self.iou_threshold):
            p, g = preds[i], gts[j]
            self._add("det_hit_pred", p.groups)
            self._add("det_hit_gt", g.groups)
            dist, length = char_edits(p.text, g.text)
            self._add("e2e_pairs", g.groups)
            self._add("e2e_dist", g.groups, dist)
            self._add("e2e_len", g.groups, length)
            if gt_line_preds is not None:  # the same line read from its ground-truth quad, for comparison
                gt_dist, _ = char_edits(gt_line_preds[j], g.text)
                self._add("e2e_gtquad_dist", g.groups, gt_dist)
            if normalize_text(p.text) == normalize_text(g.text):
                self._add("e2e_hit_pred", p.groups)
                self._add("e2e_hit_gt", g.groups)
            if p.baseline is not None and g.baseline is not None:
                dev = baseline_deviation(p.baseline, g.baseline, g.polygon)
                if math.isfinite(dev):
                    self._n["bl_pairs", None] += 1
                    self._n["bl_dev", None] += dev
            if p.kind is not None and g.kind is not None:
                self._n["kind_pairs", None] += 1
                self._n["kind_same", None] += p.kind == g.kind

        if gt_line_preds is not None:
            for g, text in zip(gts, gt_line_preds):
                c_dist, c_len = char_edits(text, g.text)
                w_dist, w_len = word_edits(text, g.text)
                self._add("rec_lines", g.groups)
                self._add("rec_exact", g.groups, int(normalize_text(text) == normalize_text(g.text)))
                self._add("rec_cdist", g.groups, c_dist)
                self._add("rec_clen", g.groups, c_len)
                self._add("rec_plen", g.groups, len(normalize_text(text)))
                self._add("rec_wdist", g.groups, w_dist)
                self._add("rec_wlen", g.groups, w_len)

    def merge(self, other: PageEvaluator) -> None:
        """Add another evaluator's counts (e.g. gathered from another DDP rank)."""
        if (other.class_names, other.iou_threshold) != (self.class_names, self.iou_threshold):
            raise ValueError("cannot merge evaluators with different class_names or iou_threshold")
        self._n.update(other._n)
        self._seg_pages += other._seg_pages
        if self.confusion is not None:
            self.confusion.merge(other.confusion)

    def compute(self) -> dict[str, float]:
        """All metrics accumulated so far as a flat ``{name: value}`` dict."""
        n = self._n
        out: dict[str, float] = {
            "n_pages": float(n["pages", None]),
            "n_gt_lines": float(n["gt", None]),
            "n_pred_lines": float(n["pred", None]),
        }
        for prefix in ("det", "e2e"):
            p, r, f = detection_prf(n[f"{prefix}_hit_gt", None], n["pred", None], n["gt", None])
            out |= {f"{prefix}_precision": p, f"{prefix}_recall": r, f"{prefix}_f1": f}
        if n["pages", None]:
            p, r, f = detection_prf(n["bow_hits", None], n["bow_pred", None], n["bow_gt", None])
            out |= {"bow_precision": p, "bow_recall": r, "bow_f1": f,
                    "page_cer": _error_rate(n["page_dist", None], n["page_len", None])}
        if n["kind_pairs", None]:
            out["kind_acc"] = n["kind_same", None] / n["kind_pairs", None]
        if n["bl_pairs", None]:
            out["baseline_dev"] = n["bl_dev", None] / n["bl_pairs", None]
        kinds = sorted({k for _, k in n if k is not None})
        for kind in [None, *kinds]:
            sfx = "" if kind is None else f"/{kind}"
            if kind is not None:
                for prefix in ("det", "e2e"):
                    precision = recall = None
                    if n["pred", kind]:
                        precision = n[f"{prefix}_hit_pred", kind] / n["pred", kind]
                        out[f"{prefix}_precision{sfx}"] = precision
                    if n["gt", kind]:
                        recall = n[f"{prefix}_hit_gt", kind] / n["gt", kind]
                        out[f"{prefix}_recall{sfx}"] = recall
                    if precision is not None and recall is not None:
                        out[f"{prefix}_f1{sfx}"] = _hmean(precision, recall)
            if n["e2e_pairs", kind]:
                out[f"e2e_cer{sfx}"] = _error_rate(n["e2e_dist", kind], n["e2e_len", kind])
                if ("e2e_gtquad_dist", None) in n:
                    out[f"e2e_cer_gt_quads{sfx}"] = _error_rate(n["e2e_gtquad_dist", kind], n["e2e_len", kind])
            if n["rec_lines", kind]:
                out[f"cer{sfx}"] = _error_rate(n["rec_cdist", kind], n["rec_clen", kind])
                out[f"wer{sfx}"] = _error_rate(n["rec_wdist", kind], n["rec_wlen", kind])
                out[f"line_acc{sfx}"] = n["rec_exact", kind] / n["rec_lines", kind]
                if n["rec_clen", kind]:
                    out[f"len_ratio{sfx}"] = n["rec_plen", kind] / n["rec_clen", kind]
        if self.confusion is not None and self._seg_pages:
            miou = self.confusion.mean_iou()
            if not math.isnan(miou):
                out["seg_miou"] = miou
            for name, value in zip(self.class_names, self.confusion.iou()):
                if not math.isnan(value):
                    out[f"seg_iou/{name}"] = float(value)
        return out
