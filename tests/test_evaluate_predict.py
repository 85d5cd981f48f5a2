"""scripts/evaluate.py and scripts/predict.py end to end on a checkpoint trained for a few steps."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
from lxml import etree

from docrec.engine.trainer import train
from docrec.formats import load
from docrec.realdata import REALDATA
from tests.conftest import REPO, compose_cfg, make_toy_pages
from tests.test_alto_write import SCHEMA as ALTO_SCHEMA
from tests.test_pagexml_write import SCHEMA as PAGE_SCHEMA

pytestmark = pytest.mark.slow

KINDS = ["printed", "handwritten"]
REGION_KINDS = ["form_field"]
TABLE_ROWS = ["det_precision", "det_recall", "det_f1", "e2e_precision", "e2e_recall", "e2e_f1", "cer", "wer",
              "line_acc", "seg_miou", "bow_f1", "page_cer"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    """(run dir of a 6-step resnet18 run on toy pages, the toy dataset folder)."""
    data = make_toy_pages(tmp_path_factory.mktemp("toy"), n_pages=8)
    cfg = compose_cfg([
        "experiment=smoke", "model.backbone.name=resnet18", f"data.path={data / 'train.jsonl'}",
        f"data.val_path={data / 'val.jsonl'}", "data.long_side=256", "data.num_workers=0", "data.max_len=40",
        "trainer.max_steps=6", "trainer.val_every=3", "trainer.ckpt_every=3", "logger.enabled=false",
        "model.fpn_channels=64", "model.recognition.d_model=64", "model.recognition.nhead=4",
        "model.recognition.dim_feedforward=128", "model.recognition.max_len=40",
    ])
    run_dir = tmp_path_factory.mktemp("run")
    train(cfg, run_dir)
    assert (run_dir / "checkpoints" / "last.pt").is_file()
    return run_dir, data


def run_script(script: str, *overrides: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, f"scripts/{script}", *overrides], check=False, cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def parse_table(stdout: str) -> tuple[list[str], dict[str, list[str]]]:
    """(column names, metric -> cells) of the printed metrics table."""
    lines = stdout.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("metric "))
    columns = lines[start].split()[1:]
    rows = {}
    for ln in lines[start + 1 :]:
        if ln.startswith("pages"):
            break
        name, *cells = ln.split()
        rows[name] = cells
    return columns, rows


def evaluate(out: Path, checkpoint: Path, *overrides: str) -> tuple[str, dict, list[dict]]:
    """Run evaluate.py; (stdout, metrics.json, pages.jsonl records)."""
    proc = run_script("evaluate.py", f"checkpoint={checkpoint}", f"hydra.run.dir={out}", "data.num_workers=0",
                      *overrides)
    metrics = json.loads((out / "metrics.json").read_text())
    pages = [json.loads(ln) for ln in (out / "pages.jsonl").read_text(encoding="utf-8").splitlines()]
    return proc.stdout, metrics, pages


def test_evaluate_prints_table_and_writes_results(trained, tmp_path):
    run_dir, data = trained
    stdout, metrics, pages = evaluate(tmp_path / "eval", run_dir, f"data.path={data / 'train.jsonl'}",
                                      f"data.val_path={data / 'val.jsonl'}")
    columns, rows = parse_table(stdout)
    assert columns == ["all", *KINDS, *REGION_KINDS]
    for name in TABLE_ROWS:
        assert name in rows, f"row {name} missing from\n{stdout}"
    for name in ("det_f1", "e2e_f1", "cer", "wer"):
        # The "all" column is metrics.json's value, as printed.
        assert float(rows[name][0]) == pytest.approx(metrics[name], abs=5e-5)
        assert len(rows[name]) == 1 + len(KINDS) + len(REGION_KINDS)
    assert float(rows["seg_miou"][0]) == pytest.approx(metrics["seg_miou"], abs=5e-5)
    for kind in KINDS:
        assert f"seg_iou/{kind}" in rows
    for kind in KINDS + REGION_KINDS:
        assert f"cer/{kind}" in metrics  # every kind (and the form field) has ground-truth lines in the toy pages
    assert "region_iou/form_field" in rows and "cer_ctc" in metrics  # the other decoder, beside
    # The toy validation split: pages 3 and 7, three lines each.
    assert metrics["n_pages"] == 2 and metrics["n_gt_lines"] == 6
    assert re.search(r"^pages\s+2\s+gt lines 6, predicted lines \d+$", stdout, re.MULTILINE)
    assert len(pages) == 2
    assert [Path(p["image"]).name for p in pages] == ["003.png", "007.png"]
    for page in pages:
        assert len(page["gt_recognition"]) == page["metrics"]["n_gt_lines"] == 3
        assert len(page["lines"]) == page["metrics"]["n_pred_lines"]
        # Each GT line's length at the evaluation scale, what scripts/cer_by_columns.py divides.
        assert all(0 < ln["length_px"] <= 320 * 1.01 for ln in page["gt_recognition"])
    assert sum(p["metrics"]["n_pred_lines"] for p in pages) == metrics["n_pred_lines"]
    assert 0.0 <= metrics["bow_f1"] <= 1.0 and metrics["page_cer"] >= 0.0
    by_columns = subprocess.run([sys.executable, "scripts/cer_by_columns.py", str(tmp_path / "eval" / "pages.jsonl")],
                                cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout
    assert by_columns.startswith("2 pages\n") and "columns/char" in by_columns


def test_predict_writes_pagexml_alto_json_and_overlay(trained, tmp_path):
    run_dir, data = trained
    images = data / "images"
    out = tmp_path / "pred"
    # last.pt, raw weights. After 6 steps the core map hovers around the trained thresholds, so whether a
    # line is found hangs on rounding (the memory layout alone flips it): lower thresholds make it certain.
    proc = run_script("predict.py", f"checkpoint={run_dir / 'checkpoints' / 'last.pt'}", f"input={images}",
                      f"output={out}", "num_workers=0", "batch_size=3", "format=[page,alto,json,overlay]",
                      "weights=raw", "postprocess.core_threshold=0.3", "postprocess.min_score=0.3")
    summary = re.search(r"docrec predict \| (\d+) page\(s\), (\d+) lines -> (.+) \(long side (\d+)\)$", proc.stdout,
                        re.MULTILINE)
    assert summary, proc.stdout
    assert int(summary[1]) == 8 and Path(summary[3]) == out and summary[4] == "256"
    total, texts = 0, []
    for image in sorted(images.glob("*.png")):
        stem = image.stem
        record = json.loads((out / f"{stem}.json").read_text(encoding="utf-8"))
        overlay = cv2.imread(str(out / f"{stem}.overlay.png"))
        assert overlay is not None and overlay.shape[:2] == (record["height"], record["width"]) == (240, 320)
        xml = (out / f"{stem}.xml").read_text(encoding="utf-8")
        # The image is named relative to the written file, so the output folder can move with the images.
        rel = os.path.relpath(image, out)
        assert f'imageFilename="{rel}"' in xml and record["image"] == rel
        (page,) = load("pagexml", out / f"{stem}.xml", check_images=True, allow_outside_root=True).pages
        (alto_page,) = load("alto", out / f"{stem}.alto.xml", check_images=True, allow_outside_root=True).pages
        assert page.image_path.resolve() == image.resolve() == alto_page.image_path.resolve()
        assert (page.width, page.height) == (record["width"], record["height"])
        assert [(ln.id, ln.text, ln.kind, ln.region) for ln in page.lines] == [
            (ln["id"], ln["text"], ln["type"], ln["region"]) for ln in record["lines"]]
        assert [(ln.text, ln.kind) for ln in alto_page.lines] == [(ln.text, ln.kind) for ln in page.lines]
        if PAGE_SCHEMA is not None:  # what Transkribus, eScriptorium and kraken are handed validates
            PAGE_SCHEMA.assertValid(etree.parse(str(out / f"{stem}.xml")))
            ALTO_SCHEMA.assertValid(etree.parse(str(out / f"{stem}.alto.xml")))
        for ln, rec in zip(page.lines, record["lines"]):
            assert len(ln.polygon) == len(rec["polygon"])
            # PAGE-XML stores integer points.
            assert all(abs(a - b) <= 0.5 for p, q in zip(ln.polygon, rec["polygon"]) for a, b in zip(p, q))
            # Every predicted line has a baseline (kraken and eScriptorium need one), inside its box.
            assert ln.baseline is not None and len(rec["baseline"]) == 2
            ys = [y for _, y in ln.polygon]
            assert all(min(ys) - 1 <= y <= max(ys) + 1 for _, y in ln.baseline)
            assert ln.confidence == pytest.approx(rec["confidence"], abs=1e-3)
        total += len(record["lines"])
        texts += [ln.text for ln in page.lines]
    assert int(summary[2]) == total > 0
    assert any(texts)  # the round trip is checked on real text, not only on empty lines
    # The folder as predict left it (PAGE + ALTO + JSON + overlays) reads back with each XML reader,
    # each taking its own files and counting the other's.
    for fmt, other in (("pagexml", "alto"), ("alto", "PcGts")):
        res = load(fmt, out, allow_outside_root=True)
        assert len(res.pages) == 8 and [root for _, root in res.left] == [other] * 8
        assert sum(len(p.lines) for p in res.pages) == total


def test_pages_with_lines_taller_than_max_line_height_are_read_smaller(trained, tmp_path):
    run_dir, data = trained
    checkpoint = run_dir / "checkpoints" / "last.pt"
    # No core threshold: the few-step model finds each page as one line, far taller than 40 px at long side 512.
    loose = ("postprocess.core_threshold=0.0", "postprocess.min_score=0.0", "long_side=512")
    pages_of = (f"data.path={data / 'train.jsonl'}", f"data.val_path={data / 'val.jsonl'}")
    _, _, pages = evaluate(tmp_path / "plain", checkpoint, *pages_of, *loose)
    assert {p["scale"] for p in pages} == {512 / 320}
    stdout, metrics, pages = evaluate(tmp_path / "scaled", checkpoint, *pages_of, *loose, "max_line_height=40")
    assert f"({len(pages)} pages smaller: max_line_height=40)" in stdout
    assert {p["scale"] for p in pages} == {256 / 320}  # down to the smallest long side
    assert metrics["n_gt_lines"] == sum(len(p["gt_recognition"]) for p in pages) > 0
    out = tmp_path / "pred"
    proc = run_script("predict.py", f"checkpoint={checkpoint}", f"input={data / 'images'}", f"output={out}",
                      "num_workers=0", "format=[json]", *loose, "max_line_height=40")
    assert "8 page(s), 8 read smaller (max_line_height=40)" in proc.stdout
    record = json.loads((out / "000.json").read_text(encoding="utf-8"))
    assert (record["width"], record["height"]) == (320, 240)  # lines in the image's own pixels
    assert all(0 <= x <= 320 and 0 <= y <= 240 for ln in record["lines"] for x, y in ln["polygon"])


def test_evaluate_predict_and_export_read_at_the_runs_read_scale(trained, tmp_path):
    from docrec.engine import checkpoint as ckpt
    from docrec.export import export_checkpoint

    run_dir, data = trained
    state = ckpt.load(run_dir / "checkpoints" / "last.pt")
    assert state["config"]["data"]["read_scale"] == 1.0  # the default: read as trained
    state["config"]["data"]["read_scale"] = 1.5  # 256 -> 384
    scaled = tmp_path / "read_scale.pt"
    ckpt.save_atomic(state, scaled)
    pages_of = (f"data.path={data / 'train.jsonl'}", f"data.val_path={data / 'val.jsonl'}")
    stdout, _, pages = evaluate(tmp_path / "eval", scaled, *pages_of)
    assert "long side 384" in stdout and {p["scale"] for p in pages} == {384 / 320}
    _, _, pages = evaluate(tmp_path / "told", scaled, *pages_of, "long_side=256")  # an explicit long side wins
    assert {p["scale"] for p in pages} == {256 / 320}
    out = tmp_path / "pred"
    proc = run_script("predict.py", f"checkpoint={scaled}", f"input={data / 'images'}", f"output={out}",
                      "num_workers=0", "format=[json]")
    assert "long side 384" in proc.stdout
    pytest.importorskip("onnx")
    assert export_checkpoint(scaled, tmp_path / "onnx")["long_side"] == 384


def test_postprocess_overrides_take_the_checkpoints_other_values_and_refuse_unknown_keys(trained):
    from docrec.engine.config import ConfigError
    from docrec.inference import load_model

    checkpoint = trained[0] / "checkpoints" / "last.pt"
    base, _, cfg = load_model(checkpoint)
    tuned, _, _ = load_model(checkpoint, postprocess={"min_score": 0.9, "max_lines": None})
    assert base.postprocess == dict(cfg["model"]["postprocess"])
    assert tuned.postprocess == {**base.postprocess, "min_score": 0.9}  # None keeps the checkpoint's value
    with pytest.raises(ConfigError, match="postprocess.shrink"):  # fixed by the training targets
        load_model(checkpoint, postprocess={"shrink": 0.4})


def test_blank_penalty_override_takes_the_checkpoints_value_unless_given(trained, tmp_path):
    from docrec.engine.config import ConfigError
    from docrec.inference import load_model

    checkpoint = trained[0] / "checkpoints" / "last.pt"
    base, _, cfg = load_model(checkpoint)
    assert base.rec_head.blank_penalty == cfg["model"]["recognition"]["blank_penalty"] == 0.5
    assert load_model(checkpoint, blank_penalty=None)[0].rec_head.blank_penalty == 0.5
    assert load_model(checkpoint, blank_penalty=0)[0].rec_head.blank_penalty == 0.0
    for bad in (-1.0, "high", True, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match=r"blank_penalty must be (>= 0|a number|a finite number)"):
            load_model(checkpoint, blank_penalty=bad)
    # A checkpoint written before the option (no key) reads with the plain best path.
    from docrec.engine import checkpoint as ckpt

    state = ckpt.load(checkpoint)
    del state["config"]["model"]["recognition"]["blank_penalty"]
    old = tmp_path / "before_option.pt"
    ckpt.save_atomic(state, old)
    assert load_model(old)[0].rec_head.blank_penalty == 0.0


def test_read_shifts_override_takes_the_checkpoints_value_unless_given(trained, tmp_path):
    from docrec.engine import checkpoint as ckpt
    from docrec.engine.config import ConfigError
    from docrec.inference import load_model

    checkpoint = trained[0] / "checkpoints" / "last.pt"
    base, _, cfg = load_model(checkpoint)
    assert base.rec_head.read_shifts == tuple(cfg["model"]["recognition"]["read_shifts"]) == (-0.1, 0.0, 0.1)
    assert load_model(checkpoint, read_shifts=None)[0].rec_head.read_shifts == (-0.1, 0.0, 0.1)
    assert load_model(checkpoint, read_shifts=[0])[0].rec_head.read_shifts == (0.0,)
    for bad in ([], [1.0], "high", 0.1):
        with pytest.raises(ConfigError, match="read_shifts must"):
            load_model(checkpoint, read_shifts=bad)
    # A checkpoint written before the option (no key) reads each box once.
    state = ckpt.load(checkpoint)
    del state["config"]["model"]["recognition"]["read_shifts"]
    old = tmp_path / "before_option.pt"
    ckpt.save_atomic(state, old)
    assert load_model(old)[0].rec_head.read_shifts == (0.0,)


def test_ctc_beam_and_rescore_overrides_take_the_checkpoints_values_unless_given(trained, tmp_path):
    from docrec.engine import checkpoint as ckpt
    from docrec.engine.config import ConfigError
    from docrec.inference import load_model

    checkpoint = trained[0] / "checkpoints" / "last.pt"
    base, _, cfg = load_model(checkpoint)
    rec = cfg["model"]["recognition"]
    assert (base.rec_head.ctc_beam, base.rec_head.rescore) == (rec["ctc_beam"], rec["rescore"])
    head = load_model(checkpoint, ctc_beam=6, rescore=0.4)[0].rec_head
    assert (head.ctc_beam, head.rescore) == (6, 0.4)
    beam_only = load_model(checkpoint, ctc_beam=6)[0].rec_head
    assert (beam_only.ctc_beam, beam_only.rescore) == (6, rec["rescore"])
    # ctc_beam=1 alone reads the best path whatever rescore the checkpoint has
    state = ckpt.load(checkpoint)
    state["config"]["model"]["recognition"].update(ctc_beam=8, rescore=0.5)
    rescoring = tmp_path / "rescoring.pt"
    ckpt.save_atomic(state, rescoring)
    assert (load_model(rescoring)[0].rec_head.ctc_beam, load_model(rescoring)[0].rec_head.rescore) == (8, 0.5)
    assert load_model(rescoring, ctc_beam=1)[0].rec_head.rescore == 0.0
    for kwargs, match in [({"ctc_beam": 0}, "ctc_beam must be >= 1"), ({"ctc_beam": 2.5}, "ctc_beam must be an integer"),
                          ({"ctc_beam": 4, "rescore": 1.5}, "rescore must be <= 1"),
                          ({"ctc_beam": 4, "rescore": -0.1}, "rescore must be >= 0")]:
        with pytest.raises(ConfigError, match=match):
            load_model(checkpoint, **kwargs)
    # A checkpoint written before the options (no keys) reads the best path.
    del state["config"]["model"]["recognition"]["ctc_beam"], state["config"]["model"]["recognition"]["rescore"]
    old = tmp_path / "before_option.pt"
    ckpt.save_atomic(state, old)
    assert (load_model(old)[0].rec_head.ctc_beam, load_model(old)[0].rec_head.rescore) == (1, 0.0)


def test_sweep_postprocess_rows_are_what_evaluate_reports(trained, tmp_path):
    """Each setting's detection F1 is evaluate's det_f1 with that setting: the same pages, scale and matching."""
    run_dir, data = trained
    pages = (f"data.path={data / 'train.jsonl'}", f"data.val_path={data / 'val.jsonl'}", "data.num_workers=0")
    proc = run_script("sweep_postprocess.py", f"checkpoint={run_dir}", f"hydra.run.dir={tmp_path / 'sweep'}", *pages,
                      "core_thresholds=[0.0,0.3]", "min_scores=[0.0,0.3]")
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    rows = result["rows"]
    assert sorted((r["core_threshold"], r["min_score"]) for r in rows) == [(0.0, 0.0), (0.0, 0.3), (0.3, 0.0), (0.3, 0.3)]
    assert [r["f1"] for r in rows] == sorted((r["f1"] for r in rows), reverse=True)  # best first
    assert result["checkpoint_setting"] == {"core_threshold": 0.6, "min_score": 0.8}  # configs/model/default.yaml
    best = rows[0]
    assert f"best: postprocess.core_threshold={best['core_threshold']} postprocess.min_score={best['min_score']}" \
        in proc.stdout
    for row in rows[:2]:
        _, metrics, _ = evaluate(tmp_path / f"eval{row['core_threshold']}-{row['min_score']}", run_dir, *pages,
                                 f"postprocess.core_threshold={row['core_threshold']}",
                                 f"postprocess.min_score={row['min_score']}")
        assert (row["pred"], row["gt"]) == (metrics["n_pred_lines"], metrics["n_gt_lines"])
        assert row["f1"] == pytest.approx(metrics["det_f1"], abs=1e-9)
    assert any(r["pred"] for r in rows)  # lines were found: the comparison is not of empty pages
    bad = subprocess.run([sys.executable, "scripts/sweep_postprocess.py", f"checkpoint={run_dir}", *pages,
                          f"hydra.run.dir={tmp_path / 'bad'}", "min_scores=[0.5,1.5]"],
                         check=False, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "min_scores must be <= 1.0, got 1.5" in bad.stdout + bad.stderr


def _realdata(*parts: str) -> Path:
    path = REALDATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.mark.realdata
@pytest.mark.parametrize("dataset", ["funsd", "pagexml"])
def test_evaluate_on_real_pages(trained, tmp_path, dataset):
    run_dir, _ = trained
    if dataset == "funsd":
        overrides = ["data=funsd", f"data.path={_realdata('funsd', 'dataset', 'training_data')}"]
    else:  # Joseph Hooker's letters: two of its pages have points off the page, skipped in lenient mode
        overrides = ["data=pagexml", f"data.path={_realdata('joseph_hooker_htr')}", "data.strict=false",
                     "data.kind=handwritten"]
    stdout, metrics, pages = evaluate(tmp_path / "eval", run_dir, *overrides, "max_pages=2")
    columns, rows = parse_table(stdout)
    assert columns == ["all", *KINDS, *REGION_KINDS] and all(name in rows for name in TABLE_ROWS)
    assert metrics["n_pages"] == len(pages) == 2 and metrics["n_gt_lines"] > 10
    assert 0.0 <= metrics["det_f1"] <= 1.0 and math.isfinite(metrics["cer"])
    kind = "printed" if dataset == "funsd" else "handwritten"
    assert f"cer/{kind}" in metrics and rows["cer"][1 + KINDS.index(kind)] != "-"
