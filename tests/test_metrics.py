"""Metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from docrec.metrics import (
    ConfusionMatrix,
    PageEvaluator,
    baseline_deviation,
    cer,
    corpus_cer,
    corpus_wer,
    detection_prf,
    line_accuracy,
    match_lines,
    page_text,
    polygon_iou,
    reading_order,
    segmentation_iou,
    wer,
)
from docrec.pages import Line


def rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# --- text -----------------------------------------------------------------------------


def test_cer_kitten_sitting():
    # k->s, e->i, insert g: 3 edits over the 7 characters of "sitting".
    assert cer("kitten", "sitting") == pytest.approx(3 / 7)


def test_wer_substitution_and_deletion():
    # ref has 6 words; "sat"->"sit" and the second "the" is missing: 2 edits.
    assert wer("the cat sit on mat", "the cat sat on the mat") == pytest.approx(2 / 6)
    # Words, not characters: one wrong letter is one whole wrong word.
    assert wer("helo world", "hello world") == pytest.approx(1 / 2)


def test_nfc_composed_and_decomposed_are_equal():
    assert cer("e\u0301t\u00e9", "\u00e9te\u0301") == 0.0
    assert wer("caf\u00e9 noir", "cafe\u0301 noir") == 0.0
    assert line_accuracy([("e\u0301", "\u00e9")]) == 1.0


def test_empty_reference():
    assert cer("", "") == 0.0
    assert cer("abc", "") == 1.0
    assert cer("", "abc") == 1.0  # three deletions over three characters
    assert wer("", "") == 0.0
    assert wer("   ", "") == 0.0  # whitespace has no words
    assert wer("one", "") == 1.0


def test_corpus_rates_sum_distances_and_lengths():
    pairs = [("kitten", "sitting"), ("abc", "abc"), ("x", "")]
    # (3 + 0 + 1) / (7 + 3 + 0): the empty reference adds its insertion, not its length.
    assert corpus_cer(pairs) == pytest.approx(4 / 10)
    # words: 1/1 + 0/1 + 1/0 -> (1 + 0 + 1) / (1 + 1 + 0)
    assert corpus_wer(pairs) == pytest.approx(1.0)
    assert corpus_wer([("a b c", "a b d"), ("x", "x y z")]) == pytest.approx((1 + 2) / (3 + 3))
    assert corpus_cer([]) == 0.0


def test_line_accuracy():
    assert line_accuracy([("a", "a"), ("b", "c"), ("", ""), ("d ", "d")]) == pytest.approx(2 / 4)
    assert line_accuracy([]) == 1.0


# --- geometry -------------------------------------------------------------------------


def test_polygon_iou_offset_squares():
    # Shifted by half a side: intersection 2, union 4 + 4 - 2 = 6.
    assert polygon_iou(rect(0, 0, 2, 2), rect(1, 0, 3, 2)) == pytest.approx(1 / 3)
    # Shifted diagonally: intersection 1, union 7.
    assert polygon_iou(rect(0, 0, 2, 2), np.array(rect(1, 1, 3, 3))) == pytest.approx(1 / 7)
    assert polygon_iou(rect(0, 0, 1, 1), rect(5, 5, 6, 6)) == 0.0
    assert polygon_iou(rect(0, 0, 1, 1), rect(0, 0, 1, 1)[::-1]) == pytest.approx(1.0)  # orientation


def test_polygon_iou_non_convex_l_shape():
    l_shape = [[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]]  # area 3
    assert polygon_iou(l_shape, rect(0, 0, 2, 2)) == pytest.approx(3 / 4)
    # The notch lies inside the convex hull but outside the L: a hull-based IoU would say > 0.
    assert polygon_iou(l_shape, rect(1, 1, 2, 2)) == 0.0
    # Lower-left unit square is inside the L: 1 / 3.
    assert polygon_iou(l_shape, rect(0, 0, 1, 1)) == pytest.approx(1 / 3)


def test_polygon_iou_self_intersecting_and_degenerate():
    bow_tie = [[0, 0], [2, 2], [2, 0], [0, 2]]  # two triangles of area 1 each
    assert polygon_iou(bow_tie, rect(0, 0, 2, 2)) == pytest.approx(2 / 4)
    assert polygon_iou([[0, 0], [1, 1]], rect(0, 0, 1, 1)) == 0.0
    assert polygon_iou([[0, 0], [1, 1], [2, 2]], [[0, 0], [1, 1], [2, 2]]) == 0.0


# --- matching and detection -----------------------------------------------------------


def test_match_lines_maximises_matches_where_greedy_does_not():
    # Unit-height strips, so IoU is the IoU of the x intervals.
    gt = [rect(0, 0, 10, 1), rect(2, 0, 12, 1)]
    pred = [rect(0.5, 0, 10.5, 1), rect(-4, 0, 8, 1)]
    # pred0-gt0 9.5/10.5, pred0-gt1 8.5/11.5, pred1-gt0 8/14, pred1-gt1 6/16 (< 0.5).
    # Greedy takes pred0-gt0 (0.905) first and leaves pred1 unmatched; the optimum matches both.
    matches = match_lines(pred, gt)
    assert [(i, j) for i, j, _ in matches] == [(0, 1), (1, 0)]
    assert [iou for *_, iou in matches] == pytest.approx([8.5 / 11.5, 8 / 14])


def test_match_lines_threshold_and_one_to_one():
    gt = [rect(0, 0, 3, 1)]
    # IoU exactly 0.5 (intersection 2, union 4) matches; below it does not.
    assert match_lines([rect(1, 0, 4, 1)], gt) == [(0, 0, pytest.approx(0.5))]
    assert match_lines([rect(1.01, 0, 4, 1)], gt) == []
    # Two identical predictions for one GT line: only one of them matches.
    assert len(match_lines([rect(0, 0, 3, 1), rect(0, 0, 3, 1)], gt)) == 1
    assert match_lines([], gt) == [] and match_lines(gt, []) == []
    assert match_lines([rect(1, 0, 4, 1)], gt, iou_threshold=0.6) == []


def test_match_lines_many_lines_prefers_higher_iou():
    # 300 GT lines in three columns; predictions shifted by 1 px down, listed in reverse.
    gt = [rect(c * 400, r * 20, c * 400 + 300, r * 20 + 15) for c in range(3) for r in range(100)]
    pred = [rect(x0, y0 + 1, x1, y1 + 1) for (x0, y0), (x1, _), (_, y1), _ in gt][::-1]
    matches = match_lines(pred, gt)
    assert [(i, j) for i, j, _ in matches] == [(i, 299 - i) for i in range(300)]
    assert all(iou == pytest.approx(14 / 16) for *_, iou in matches)


@pytest.mark.parametrize(
    ("counts", "expected"),
    [
        ((0, 0, 0), (1.0, 1.0, 1.0)),  # nothing to find, nothing predicted
        ((0, 0, 5), (1.0, 0.0, 0.0)),  # all missed
        ((0, 3, 0), (0.0, 1.0, 0.0)),  # only false positives
        ((0, 3, 5), (0.0, 0.0, 0.0)),
        ((2, 4, 5), (0.5, 0.4, 2 * 0.5 * 0.4 / 0.9)),
        ((4, 4, 4), (1.0, 1.0, 1.0)),
    ],
)
def test_detection_prf(counts, expected):
    assert detection_prf(*counts) == pytest.approx(expected)


# --- segmentation ---------------------------------------------------------------------

SEG_GT = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 255, 255], [2, 2, 2, 2]], dtype=np.uint8)
SEG_PRED = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [2, 2, 0, 1], [2, 2, 0, 2]], dtype=np.uint8)


def test_segmentation_iou_by_hand():
    # Two pixels are ignored. Class 0: GT 4, pred 4, both 3 -> 3/5. Class 1: GT 4, pred 5,
    # both 4 -> 4/5. Class 2: GT 6, pred 5, both 5 -> 5/6. Class 3 absent -> NaN, not averaged.
    per_class, mean = segmentation_iou(SEG_PRED, SEG_GT, num_classes=4)
    assert per_class[:3] == pytest.approx([3 / 5, 4 / 5, 5 / 6])
    assert math.isnan(per_class[3])
    assert mean == pytest.approx((3 / 5 + 4 / 5 + 5 / 6) / 3)


def test_segmentation_class_only_predicted_scores_zero():
    pred = SEG_PRED.copy()
    pred[3, 3] = 3
    per_class, _ = segmentation_iou(pred, SEG_GT, num_classes=4)
    assert per_class[3] == 0.0
    assert per_class[2] == pytest.approx(4 / 6)


def test_confusion_matrix_accumulates_pages():
    cm = ConfusionMatrix(4)
    cm.update(SEG_PRED[:2], SEG_GT[:2])
    cm.update(SEG_PRED[2:], SEG_GT[2:])
    whole = ConfusionMatrix(4)
    whole.update(SEG_PRED, SEG_GT)
    np.testing.assert_array_equal(cm.matrix, whole.matrix)
    assert cm.matrix.sum() == 14
    assert math.isnan(ConfusionMatrix(3).mean_iou())


def test_confusion_matrix_rejects_bad_maps():
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError, match="shape"):
        cm.update(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="gt class map"):
        cm.update(np.zeros((1, 1)), np.full((1, 1), 3))
    with pytest.raises(ValueError, match="pred class map"):
        cm.update(np.full((1, 1), 7), np.zeros((1, 1)))


# --- the page evaluator ---------------------------------------------------------------

CLASSES = ("background", "printed", "handwritten")


def _page1() -> dict:
    gt = [
        {"polygon": rect(0, 0, 100, 10), "text": "Hello world", "kind": "printed"},
        {"polygon": rect(0, 20, 100, 30), "text": "Total 42", "kind": "printed"},
        {"polygon": rect(0, 40, 100, 50), "text": "Jean", "type": "handwritten"},  # manifest key
    ]
    pred = [
        # IoU with GT 0: 900 / 1100 -> match, text right.
        {"polygon": rect(0, 1, 100, 11), "text": "Hello world", "kind": "printed"},
        # Same box as GT 1 -> match, one wrong character, wrong kind.
        {"polygon": rect(0, 20, 100, 30), "text": "Total 4Z", "kind": "handwritten"},
        # Far from every GT line -> false positive. GT 2 is missed.
        {"polygon": rect(200, 0, 300, 10), "text": "noise", "kind": "handwritten"},
    ]
    return {
        "pred_lines": pred,
        "gt_lines": gt,
        "pred_class_map": np.array([[0, 1], [2, 0]]),
        "gt_class_map": np.array([[0, 1], [2, 2]]),
        "gt_line_preds": ["Hello world", "Total 42", "Jan"],
    }


def _page2() -> dict:
    gt = [
        Line(id="g0", polygon=rect(0, 0, 50, 10), text="Name:", kind="form_field"),
        Line(id="g1", polygon=rect(60, 0, 160, 10), text="Marie Curie", kind="handwritten"),
    ]
    pred = [
        {"polygon": rect(0, 0, 50, 10), "text": "Name:", "kind": "form_field"},  # match, right
        # IoU with GT 1: 500 / 1500 = 1/3 < 0.5 -> false positive, GT 1 missed.
        {"polygon": rect(60, 5, 160, 15), "text": "Marie Curie", "kind": "handwritten"},
    ]
    return {
        "pred_lines": pred,
        "gt_lines": gt,
        "pred_class_map": np.array([[1, 1], [0, 0]]),
        "gt_class_map": np.array([[1, 2], [0, 0]]),
        "gt_line_preds": ["Name;", "Marie Curie"],
    }


EXPECTED = {
    "n_pages": 2, "n_gt_lines": 5, "n_pred_lines": 5,
    # 3 matches (p1: 2, p2: 1) of 5 predictions and 5 GT lines.
    "det_precision": 3 / 5, "det_recall": 3 / 5, "det_f1": 3 / 5,
    # 2 matches with exact text ("Hello world", "Name:").
    "e2e_precision": 2 / 5, "e2e_recall": 2 / 5, "e2e_f1": 2 / 5,
    # Matched pairs: 0/11, 1/8 ("4Z" vs "42"), 0/5.
    "e2e_cer": 1 / 24,
    # The same three GT lines read from their own boxes (gt_line_preds): 0/11, 0/8, 1/5 ("Name;").
    "e2e_cer_gt_quads": 1 / 24, "e2e_cer_gt_quads/printed": 0.0, "e2e_cer_gt_quads/form_field": 1 / 5,
    # Matched pairs' kinds: printed=printed, handwritten!=printed, form_field=form_field.
    "kind_acc": 2 / 3,
    # Recognition on GT lines: distances 0, 0, 1 (Jan/Jean), 1 (;/:), 0 over 11+8+4+5+11.
    "cer": 2 / 39,
    # Word errors 0, 0, 1, 1, 0 over 2+2+1+1+2 words; exact lines 3 of 5.
    "wer": 2 / 8, "line_acc": 3 / 5,
    # Pred kinds: printed 1 (matched 1, exact 1), handwritten 3 (matched 1, exact 0),
    # form_field 1 (matched 1, exact 1).
    "det_precision/printed": 1.0, "det_precision/handwritten": 1 / 3, "det_precision/form_field": 1.0,
    "e2e_precision/printed": 1.0, "e2e_precision/handwritten": 0.0, "e2e_precision/form_field": 1.0,
    # GT kinds: printed 2 (matched 2, exact 1), handwritten 2 (matched 0), form_field 1 (1, 1).
    "det_recall/printed": 1.0, "det_recall/handwritten": 0.0, "det_recall/form_field": 1.0,
    "e2e_recall/printed": 1 / 2, "e2e_recall/handwritten": 0.0, "e2e_recall/form_field": 1.0,
    "det_f1/printed": 1.0, "det_f1/handwritten": 0.0, "det_f1/form_field": 1.0,
    "e2e_f1/printed": 2 / 3, "e2e_f1/handwritten": 0.0, "e2e_f1/form_field": 1.0,
    # Matched pairs by GT kind: printed 0/11 + 1/8; form_field 0/5; no handwritten pair.
    "e2e_cer/printed": 1 / 19, "e2e_cer/form_field": 0.0,
    # printed: 0/19 chars, 0/4 words, 2/2 exact; handwritten: Jan/Jean 1/4 + 0/11 chars,
    # 1/1 + 0/2 words, 1/2 exact; form_field: 1/5 chars, 1/1 word, 0/1 exact.
    "cer/printed": 0.0, "wer/printed": 0.0, "line_acc/printed": 1.0,
    "cer/handwritten": 1 / 15, "wer/handwritten": 1 / 3, "line_acc/handwritten": 1 / 2,
    "cer/form_field": 1 / 5, "wer/form_field": 1.0, "line_acc/form_field": 0.0,
    # Characters read per GT character: 11+8+3+5+11 = 38 of 39; printed 19/19, handwritten 14/15, form_field 5/5.
    "len_ratio": 38 / 39, "len_ratio/printed": 1.0, "len_ratio/handwritten": 14 / 15, "len_ratio/form_field": 1.0,
    # Pixels (gt, pred): p1 (0,0) (1,1) (2,2) (2,0); p2 (1,1) (2,1) (0,0) (0,0).
    # background: GT 3, pred 4, both 3 -> 3/4; printed: GT 2, pred 3, both 2 -> 2/3;
    # handwritten: GT 3, pred 1, both 1 -> 1/3.
    "seg_iou/background": 3 / 4, "seg_iou/printed": 2 / 3, "seg_iou/handwritten": 1 / 3,
    "seg_miou": (3 / 4 + 2 / 3 + 1 / 3) / 3,
    # Bags of words: p1 predicts Hello world Total 4Z noise, holds Hello world Total 42 Jean (3 hits);
    # p2 predicts and holds Name: Marie Curie (3 hits): 6 of 8 on both sides.
    "bow_precision": 6 / 8, "bow_recall": 6 / 8, "bow_f1": 6 / 8,
    # Page text in reading order: p1 "Hello world noise Total 4Z" (noise shares Hello's row, right of it)
    # against "Hello world Total 42 Jean": delete "noise " (6), Z->2 (1), insert " Jean" (5) = 12 over 25;
    # p2 both "Name: Marie Curie" (17 characters; the second box sits low but within the row).
    "page_cer": 12 / 42,
}  # fmt: skip


def test_page_evaluator_two_pages_by_hand():
    ev = PageEvaluator(class_names=CLASSES)
    ev.update(**_page1())
    ev.update(**_page2())
    result = ev.compute()
    # The undefined handwritten e2e_cer (no matched handwritten pair) is left out.
    assert set(result) == set(EXPECTED)
    for key, value in EXPECTED.items():
        assert result[key] == pytest.approx(value), key


def test_page_evaluator_merge_equals_one_pass():
    a, b = PageEvaluator(class_names=CLASSES), PageEvaluator(class_names=CLASSES)
    a.update(**_page1())
    b.update(**_page2())
    a.merge(b)
    assert a.compute() == pytest.approx(EXPECTED)


def test_page_evaluator_optional_inputs():
    ev = PageEvaluator()
    page = _page1()
    ev.update(page["pred_lines"], page["gt_lines"])
    result = ev.compute()
    assert not any(k.startswith(("cer", "wer", "line_acc", "seg_")) for k in result)
    assert result["det_recall"] == pytest.approx(2 / 3)
    # A page with no lines at all is perfect for detection.
    empty = PageEvaluator()
    empty.update([], [])
    assert empty.compute() == {
        "n_pages": 1, "n_gt_lines": 0, "n_pred_lines": 0,
        "det_precision": 1.0, "det_recall": 1.0, "det_f1": 1.0,
        "e2e_precision": 1.0, "e2e_recall": 1.0, "e2e_f1": 1.0,
        "bow_precision": 1.0, "bow_recall": 1.0, "bow_f1": 1.0, "page_cer": 0.0,
    }  # fmt: skip


def test_page_evaluator_rejects_inconsistent_input():
    ev = PageEvaluator()
    page = _page1()
    with pytest.raises(ValueError, match="gt_line_preds"):
        ev.update(page["pred_lines"], page["gt_lines"], gt_line_preds=["only one"])
    with pytest.raises(ValueError, match="class_names"):
        ev.update([], [], pred_class_map=np.zeros((2, 2)), gt_class_map=np.zeros((2, 2)))
    with pytest.raises(ValueError, match="both"):
        PageEvaluator(class_names=CLASSES).update([], [], pred_class_map=np.zeros((2, 2)))
    # A rejected class map leaves no partial counts behind.
    seg = PageEvaluator(class_names=CLASSES)
    with pytest.raises(ValueError, match="gt class map"):
        seg.update(page["pred_lines"], page["gt_lines"], np.zeros((2, 2)), np.full((2, 2), 5))
    assert seg.compute()["n_pages"] == 0


def test_lines_in_form_field_regions_get_their_own_breakdown():
    gt = [{"polygon": rect(0, 0, 100, 10), "text": "Jean", "kind": "handwritten", "region": "form_field"},
          {"polygon": rect(0, 20, 100, 30), "text": "Name", "kind": "printed"}]
    pred = [{"polygon": rect(0, 0, 100, 10), "text": "Jean", "kind": "handwritten", "region": "form_field"},
            {"polygon": rect(0, 20, 100, 30), "text": "Nome", "kind": "printed", "region": "form_field"}]
    ev = PageEvaluator()
    ev.update(pred, gt, gt_line_preds=["Jean", "Name"])
    m = ev.compute()
    # Precision by predicted region (2 predicted in fields, 1 right), recall by GT region (1 of 1).
    assert m["det_precision/form_field"] == 1.0 and m["e2e_precision/form_field"] == 0.5
    assert m["e2e_recall/form_field"] == 1.0 and m["cer/form_field"] == 0.0
    # The kind breakdown is unchanged by the region: the field's line is still handwritten.
    assert m["e2e_recall/handwritten"] == 1.0 and m["e2e_recall/printed"] == 0.0
    assert m["kind_acc"] == 1.0


def test_baseline_deviation_is_in_line_heights_and_only_where_both_have_baselines():
    gt_poly = [(0, 0), (100, 0), (100, 20), (0, 20)]
    assert baseline_deviation([(0, 16), (100, 16)], [(0, 16), (100, 16)], gt_poly) == 0.0
    assert baseline_deviation([(0, 21), (100, 21)], [(0, 16), (100, 16)], gt_poly) == pytest.approx(0.25)
    ev = PageEvaluator()
    gt = [{"polygon": gt_poly, "text": "a", "baseline": [(0, 16), (100, 16)]},
          {"polygon": [(0, 40), (100, 40), (100, 60), (0, 60)], "text": "b", "baseline": None}]
    pred = [{"polygon": gt_poly, "text": "a", "baseline": [(0, 18), (100, 18)]},
            {"polygon": gt[1]["polygon"], "text": "b", "baseline": [(0, 55), (100, 55)]}]
    ev.update(pred, gt)
    assert ev.compute()["baseline_dev"] == pytest.approx(0.1)
    ev2 = PageEvaluator()
    ev2.update([{**p, "baseline": None} for p in pred], gt)
    assert "baseline_dev" not in ev2.compute()


def test_page_metrics_do_not_depend_on_how_the_lines_are_cut():
    # FUNSD cuts a row per entity; a detector reads the physical line: "Date:" matches nothing (IoU
    # 0.30), yet the page's words and its text in reading order are the same.
    gt = [{"polygon": rect(0, 0, 40, 10), "text": "Date:"}, {"polygon": rect(50, 1, 120, 11), "text": "12/03/98"},
          {"polygon": rect(0, 30, 80, 40), "text": "To: Lab"}]
    pred = [{"polygon": rect(0, 0, 120, 11), "text": "Date: 12/03/98"}, {"polygon": rect(0, 30, 80, 40), "text": "To:  Lab"}]
    ev = PageEvaluator()
    ev.update(pred, gt)
    result = ev.compute()
    assert result["det_recall"] == pytest.approx(2 / 3) and result["e2e_recall"] == 0.0
    assert result["bow_f1"] == 1.0 and result["page_cer"] == 0.0
    # The order lines are listed in does not count, their place does; a missing word costs recall
    # and its characters: "Date: To: Lab" against "Date: 12/03/98 To: Lab" is 9 deletions over 22.
    ev = PageEvaluator()
    ev.update([{"polygon": rect(0, 30, 80, 40), "text": "To: Lab"}, {"polygon": rect(0, 0, 120, 11), "text": "Date:"}], gt)
    result = ev.compute()
    assert (result["bow_precision"], result["bow_recall"]) == (1.0, pytest.approx(3 / 4))
    assert result["page_cer"] == pytest.approx(9 / 22)


def test_fold_case_scores_every_text_metric_ignoring_case():
    # SROIE labels "Jalan Ria" as "JALAN RIA": a reader that writes what is printed is right.
    gt = [{"polygon": rect(0, 0, 100, 10), "text": "4-20, JALAN RIA"}, {"polygon": rect(0, 20, 100, 30), "text": "TOTAL"}]
    pred = [{"polygon": rect(0, 0, 100, 10), "text": "4-20, Jalan Ria"}, {"polygon": rect(0, 20, 100, 30), "text": "Tota"}]
    reads = ["4-20, Jalan Ria", "TOTAl"]
    cased, folded = PageEvaluator(), PageEvaluator()
    cased.update(pred, gt, gt_line_preds=reads)
    folded.update(pred, gt, gt_line_preds=reads, fold_case=True)
    c, f = cased.compute(), folded.compute()
    # With case: 6 small letters of line 1 and the 3 of "ota" + the dropped "L"; "TOTAl" costs 1.
    assert c["e2e_cer"] == pytest.approx(10 / 20) and c["cer"] == pytest.approx(7 / 20) and c["e2e_f1"] == 0.0
    assert c["bow_f1"] == pytest.approx(1 / 4)  # only "4-20," is in both bags
    # Ignoring case only the dropped "L" counts; line 1 is exact, every word but TOTAL is in both bags.
    assert f["e2e_cer"] == pytest.approx(1 / 20) and f["cer"] == 0.0 and f["wer"] == 0.0
    assert f["e2e_f1"] == pytest.approx(0.5) and f["page_cer"] == pytest.approx(1 / 21)
    assert f["bow_precision"] == pytest.approx(3 / 4) and f["bow_recall"] == pytest.approx(3 / 4)
    assert f["len_ratio"] == c["len_ratio"] == 1.0


def test_reading_order_is_rows_top_to_bottom_then_left_to_right():
    polygons = [rect(60, 22, 90, 32), rect(0, 0, 50, 10), rect(0, 21, 50, 31), rect(60, 2, 100, 12), rect(0, 60, 10, 70)]
    assert reading_order(polygons) == [1, 3, 2, 0, 4]
    assert reading_order([]) == []
    assert page_text([{"polygon": rect(50, 0, 90, 10), "text": " b  c"}, {"polygon": rect(0, 0, 40, 10), "text": "a"},
                      {"polygon": rect(0, 20, 40, 30), "text": " "}]) == "a b c"


def test_cer_by_columns_buckets_lines_by_the_columns_each_character_gets():

    from tests.conftest import load_script

    mod = load_script("scripts/cer_by_columns.py")
    # 40 px / 4 px a column / 5 characters = 2 columns each; 120 px for 5 = 6 columns each.
    records = [{"gt_recognition": [{"gt": "Hello", "pred": "Hel", "length_px": 40.0},
                                   {"gt": "World", "pred": "World", "length_px": 120.0},
                                   {"gt": "", "pred": "x", "length_px": 50.0}]}]
    by_cols, _, by_case = mod.tables(records, stride=4.0)
    rows = {r.split()[0]: r.split()[1:] for r in by_cols.splitlines()[1:]}
    assert rows == {"2.0-2.5": ["1", "5", "40.0%"], ">=": ["6.0", "1", "5", "0.0%"]}
    # 2 edits over 10 characters; no line is mostly capitals.
    assert by_case == "CER 20.0 %, ignoring case 20.0 %; all-caps lines (0.0 % of the characters) -, the others 20.0 %"
    _, _, by_case = mod.tables([{"gt_recognition": [{"gt": "TOTAL", "pred": "total", "length_px": 40.0},
                                                     {"gt": "Due", "pred": "Due", "length_px": 40.0}]}], 4.0)
    assert by_case == ("CER 62.5 %, ignoring case 0.0 %; all-caps lines (62.5 % of the characters) 100.0 %, "
                       "the others 0.0 %")
