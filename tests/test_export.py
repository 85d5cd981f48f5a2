"""ONNX export: each graph against PyTorch, and the onnxruntime example against the model end to end
(with the attention decoder and with the CTC head)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from tests.conftest import REPO, compose_cfg, load_script, make_toy_pages

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")  # torch.onnx's exporter (dynamo=True) is built on it

from docrec.data.dataset import normalize
from docrec.engine import checkpoint as ckpt
from docrec.export import DECODER_FILE, ENCODER_FILE, SEGMENTATION_FILE
from docrec.inference import ImageFolder, find_images, load_model
from docrec.models import Charset, build_model

pytestmark = pytest.mark.slow

ATOL = 1e-4
LONG_SIDE = 256
#: A small but complete model. Post-processing thresholds at 0 make every page one line,
#: so the end-to-end comparison does not hinge on pixels whose core probability is 0.5 +- 1e-6.
MODEL_OVERRIDES = [
    "model.backbone.name=resnet18", "model.fpn_channels=64", "model.segmentation.hidden=32",
    "model.recognition.d_model=64", "model.recognition.nhead=4", "model.recognition.dim_feedforward=128",
    "model.recognition.encoder_layers=1", "model.recognition.decoder_layers=2",
    "model.recognition.max_len=24", "model.recognition.roi_max_width=64", "model.recognition.ctc_frames=2",
    "model.postprocess.core_threshold=0.0", "model.postprocess.min_score=0.0",
    "model.recognition.pixel_stem=0",  # the encoder of fused map and quads alone; the stem's has its own test
]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _load_example():
    return load_script("examples/onnx_predict.py")


def _export_random_model(tmp: Path, overrides: list[str]):
    """A random-weight model (fixed seed) of ``overrides`` saved as a checkpoint and exported by scripts/export.py:
    (the checkpoint's model, the export folder)."""
    cfg = compose_cfg(overrides)
    charset = Charset(list(" .0123456789adefimnoprstvPw"))
    torch.manual_seed(0)
    model = build_model(cfg.model, charset)
    with torch.no_grad():  # random weights may end every line at once: these read to the RoI's end instead
        model.rec_head.classifier.bias[charset.eos_id] = -20.0
    config = {"model": OmegaConf.to_container(cfg.model, resolve=True),
              "data": {"kinds": list(cfg.data.kinds), "region_kinds": list(cfg.data.region_kinds),
                       "long_side": LONG_SIDE}}
    ckpt.save_atomic({"model": model.state_dict(), "ema": None, "charset": charset.to_dict(), "config": config},
                     tmp / "model.pt")
    out = tmp / "onnx"
    proc = subprocess.run([sys.executable, "scripts/export.py", "--checkpoint", str(tmp / "model.pt"),
                           "--output", str(out)], check=False, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "docrec export |" in proc.stdout
    model, _, _ = load_model(tmp / "model.pt", "raw")
    return model, out


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return _export_random_model(tmp_path_factory.mktemp("export"), MODEL_OVERRIDES)


@pytest.fixture(scope="module")
def reader(exported):
    return _load_example().OnnxPageReader(exported[1])


@pytest.fixture(scope="module")
def ctc_reader(exported):
    return _load_example().OnnxPageReader(exported[1], decoder="ctc")


@pytest.fixture(params=["attention", "ctc"])
def decoder(request, exported, monkeypatch):
    """Each decoder in turn, set on the PyTorch model as ``model.recognition.decoder`` would set it."""
    monkeypatch.setattr(exported[0].rec_head, "decoder_kind", request.param)
    return request.param


@pytest.fixture(scope="module")
def pages(tmp_path_factory) -> list[Path]:
    return find_images(make_toy_pages(tmp_path_factory.mktemp("pages"), n_pages=2, width=300, height=230) / "images")


def _quads() -> torch.Tensor:
    """Lines in input pixels (TL TR BR BL): straight, skewed, short, one wider than roi_max_width allows."""
    return torch.tensor([
        [[10, 12], [150, 12], [150, 34], [10, 34]],
        [[20, 60], [120, 52], [122, 70], [22, 78]],
        [[200, 100], [224, 100], [224, 122], [200, 122]],
        [[2, 150], [254, 150], [254, 160], [2, 160]],
    ], dtype=torch.float32)


def test_export_writes_graphs_and_metadata(exported):
    model, out = exported
    for name in (SEGMENTATION_FILE, ENCODER_FILE, DECODER_FILE):
        graph = onnx.load(str(out / name))
        onnx.checker.check_model(graph)
        assert max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx")) >= 17
    meta = json.loads((out / "export.json").read_text())
    assert meta["kinds"] == model.kinds and meta["classes"] == ["background", *model.kinds]
    assert meta["long_side"] == LONG_SIDE and meta["size_divisor"] == 32
    assert meta["tokens"] == {"pad": model.charset.pad_id, "bos": model.charset.bos_id,
                              "eos": model.charset.eos_id, "unk": model.charset.unk_id}
    assert meta["max_len"] == 24 and meta["roi_max_width"] == 64
    assert meta["postprocess"] == model.postprocess
    assert meta["region_kinds"] == model.region_kinds
    assert meta["decoder"] == model.rec_head.decoder_kind == "attention"
    assert meta["read_shifts"] == list(model.rec_head.read_shifts) == [-0.1, 0.0, 0.1]  # configs/model/default.yaml
    assert meta["pixel_stem"] is False
    encoder = ort.InferenceSession(str(out / ENCODER_FILE))
    assert [o.name for o in encoder.get_outputs()] == ["memory", "memory_padding", "ctc_log_probs", "cross_keys",
                                                       "cross_values"]
    head = model.rec_head
    assert meta["format_version"] == 2
    assert meta["decoder_cache"] == {"layers": len(head.decoder.layers), "heads": head.decoder.layers[0].self_attn.num_heads,
                                     "head_dim": head.classifier.in_features // head.decoder.layers[0].self_attn.num_heads}
    decoder = ort.InferenceSession(str(out / DECODER_FILE))
    assert [o.name for o in decoder.get_outputs()] == ["log_probs", "present_keys", "present_values"]
    assert Charset.from_dict(json.loads((out / "charset.json").read_text())) == model.charset


@pytest.mark.parametrize("size", [(256, 192), (160, 320)])
def test_segmentation_matches_pytorch(exported, size):
    model, out = exported
    torch.manual_seed(1)
    x = torch.randn(1, 3, *size)
    session = ort.InferenceSession(str(out / SEGMENTATION_FILE))
    class_prob, core_prob, region_prob, fused = session.run(None, {"image": x.numpy()})
    with torch.no_grad():
        ref_fused, class_logits, core_logits, region_logits = model._maps(x)
    assert class_prob.shape == (1, 1 + len(model.kinds), *size) and core_prob.shape == (1, *size)
    assert region_prob.shape == (1, len(model.region_kinds), *size)
    assert fused.shape == tuple(ref_fused.shape) == (1, 64, size[0] // 4, size[1] // 4)
    np.testing.assert_allclose(class_prob, class_logits.softmax(1).numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(core_prob, core_logits.sigmoid().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(region_prob, region_logits.sigmoid().numpy(), atol=ATOL, rtol=0)
    np.testing.assert_allclose(fused, ref_fused.numpy(), atol=ATOL, rtol=0)


@pytest.mark.parametrize("n_lines", [1, 4])
def test_encoder_matches_pytorch(exported, n_lines):
    model, out = exported
    torch.manual_seed(2)
    fused = torch.randn(1, 64, 48, 64)  # a 192 x 256 input
    quads = _quads()[:n_lines]
    memory, padding, ctc_log_probs, cross_k, _ = ort.InferenceSession(str(out / ENCODER_FILE)).run(
        None, {"fused": fused.numpy(), "quads": quads.numpy()})
    with torch.no_grad():
        ref_memory, ref_padding = model.rec_head.encode(fused, [quads])
        ref_ctc = model.rec_head.ctc_log_probs(ref_memory)
        ref_cross_k, _ = model.rec_head.cross_cache(ref_memory)
    w = ref_memory.shape[1]  # PyTorch stops at the widest line; the graph always has roi_max_width columns
    assert memory.shape == (n_lines, 64, 64) and padding.shape == (n_lines, 64)
    k = model.rec_head.ctc_frames  # CTC frames per column (2 here)
    assert ctc_log_probs.shape == (n_lines, 64 * k, len(model.charset)) and ctc_log_probs.dtype == np.float32
    np.testing.assert_array_equal(padding[:, :w], ref_padding.numpy())
    assert padding[:, w:].all()
    valid = ~ref_padding.numpy()
    np.testing.assert_allclose(memory[:, :w][valid], ref_memory.numpy()[valid], atol=ATOL, rtol=0)
    frames = ~model.rec_head.frame_padding(ref_padding).numpy()
    np.testing.assert_allclose(ctc_log_probs[:, : w * k][frames], ref_ctc.numpy()[frames], atol=ATOL, rtol=0)
    assert cross_k.shape[:2] == (len(model.rec_head.decoder.layers), n_lines) and cross_k.shape[3] == 64
    keys_valid = np.broadcast_to(valid[None, :, None, :, None], ref_cross_k.shape)
    np.testing.assert_allclose(cross_k[..., :w, :][keys_valid], ref_cross_k.numpy()[keys_valid], atol=ATOL, rtol=0)


def test_decoder_step_matches_pytorch(exported):
    """The cached step from an empty cache, fed its own present keys/values, against decode() on the prefix."""
    model, out = exported
    torch.manual_seed(3)
    head, cs = model.rec_head, model.charset
    fused = torch.randn(1, 64, 48, 64)
    _, padding, _, cross_k, cross_v = ort.InferenceSession(str(out / ENCODER_FILE)).run(
        None, {"fused": fused.numpy(), "quads": _quads().numpy()})
    memory, ref_padding = head.encode(fused, [_quads()])
    w = memory.shape[1]
    cross_k, cross_v, padding = cross_k[..., :w, :], cross_v[..., :w, :], padding[:, :w]
    tokens = torch.tensor([[cs.bos_id, 5, 6, 7, 8], [cs.bos_id, 9, 4, 4, 4],
                           [cs.bos_id, 4, 4, 4, 4], [cs.bos_id, 10, 11, 12, 13]])
    session = ort.InferenceSession(str(out / DECODER_FILE))
    past_k = past_v = np.zeros((*cross_k.shape[:3], 0, cross_k.shape[-1]), np.float32)
    for t in range(1, 5):
        log_probs, past_k, past_v = session.run(None, {
            "cross_keys": cross_k, "cross_values": cross_v, "memory_padding": padding,
            "token": tokens[:, t - 1].numpy(), "past_keys": past_k, "past_values": past_v})
        assert past_k.shape[3] == t
        with torch.no_grad():
            logits = head.decode(memory, ref_padding, tokens[:, :t])[:, -1]
        logits[:, [cs.pad_id, cs.bos_id]] = float("-inf")
        ref = logits.log_softmax(-1).numpy()
        assert log_probs.shape == (4, len(cs))
        assert np.isneginf(log_probs[:, [cs.pad_id, cs.bos_id]]).all()
        finite = np.isfinite(ref)
        np.testing.assert_array_equal(np.isfinite(log_probs), finite)
        np.testing.assert_allclose(log_probs[finite], ref[finite], atol=ATOL, rtol=0)


def test_example_decode_matches_recognize(exported, reader, ctc_reader, decoder):
    """Greedy attention loop and CTC best path of the example against ``DocRecModel.recognize``."""
    model, _ = exported
    onnx_reader = ctc_reader if decoder == "ctc" else reader
    assert onnx_reader.decoder == decoder
    torch.manual_seed(4)
    x = torch.randn(1, 3, 192, 256)
    quads = _quads()
    fused = onnx_reader.segment(x.numpy())[3]
    got = onnx_reader.read(fused, quads.numpy())
    ref = model.recognize(x, [quads])[0]
    assert [t for t, _ in got] == [t for t, _ in ref]
    assert any(t for t, _ in ref)  # random weights still emit characters, so the decoding is exercised
    np.testing.assert_allclose([c for _, c in got], [c for _, c in ref], atol=ATOL, rtol=0)


def test_example_decoder_choice(exported, tmp_path):
    """The reader takes export.json's decoder, attention when absent (older exports), unless told otherwise."""
    out = exported[1]
    meta = json.loads((out / "export.json").read_text())
    for name in [*meta["files"].values()]:
        (tmp_path / name).symlink_to(out / name)
    reader_cls = _load_example().OnnxPageReader
    for recorded, override, expected in [("ctc", None, "ctc"), (None, None, "attention"),
                                         ("ctc", "attention", "attention"), (None, "ctc", "ctc")]:
        edited = {k: v for k, v in meta.items() if k != "decoder"}
        if recorded:
            edited["decoder"] = recorded
        (tmp_path / "export.json").write_text(json.dumps(edited))
        assert reader_cls(tmp_path, decoder=override).decoder == expected
    with pytest.raises(ValueError, match="decoder"):
        reader_cls(tmp_path, decoder="beam")


def _ctc_reads_agree(exported, folder: Path, monkeypatch, meta: dict, **head_settings) -> list[tuple[str, float]]:
    """The example's CTC reading of a random page's ``_quads`` with ``meta`` as export.json (the graphs linked into
    ``folder``) against ``DocRecModel.recognize`` with ``head_settings`` set on its head: the same texts and
    confidences; returns them."""
    model, out = exported
    for name in meta["files"].values():
        if not (folder / name).exists():
            (folder / name).symlink_to(out / name)
    (folder / "export.json").write_text(json.dumps(meta))
    monkeypatch.setattr(model.rec_head, "decoder_kind", "ctc")
    for key, value in head_settings.items():
        monkeypatch.setattr(model.rec_head, key, value)
    torch.manual_seed(4)
    x = torch.randn(1, 3, 192, 256)
    quads = _quads()
    onnx_reader = _load_example().OnnxPageReader(folder, decoder="ctc")
    got = onnx_reader.read(onnx_reader.segment(x.numpy())[3], quads.numpy())
    ref = model.recognize(x, [quads])[0]
    assert [t for t, _ in got] == [t for t, _ in ref]
    np.testing.assert_allclose([c for _, c in got], [c for _, c in ref], atol=ATOL, rtol=0)
    return got


def test_example_ctc_reads_with_the_exports_blank_penalty(exported, tmp_path, monkeypatch):
    """export.json carries the head's blank_penalty; the example's best path applies it as ``ctc_greedy`` does."""
    model, out = exported
    meta = json.loads((out / "export.json").read_text())
    assert meta["blank_penalty"] == model.rec_head.blank_penalty == 0.5  # configs/model/default.yaml
    reads = {}
    for penalty in (0.0, 4.0):  # one read per box: the penalty alone
        got = _ctc_reads_agree(exported, tmp_path, monkeypatch, {**meta, "blank_penalty": penalty, "read_shifts": [0.0]},
                               blank_penalty=penalty, read_shifts=(0.0,))
        reads[penalty] = "".join(t for t, _ in got)
    assert len(reads[4.0]) > len(reads[0.0])  # the penalty changed what was read: more characters, fewer blanks


def test_example_ctc_reads_each_box_at_the_exports_read_shifts(exported, tmp_path, monkeypatch):
    """export.json carries the head's read_shifts; the example runs the encoder once per shift on the moved
    quads and averages the probabilities, as ``RecognitionHead.read`` does (older exports: one read)."""
    _, out = exported
    meta = json.loads((out / "export.json").read_text())
    older = {k: v for k, v in meta.items() if k != "read_shifts"}
    once = _ctc_reads_agree(exported, tmp_path, monkeypatch, older, read_shifts=(0.0,))
    thrice = _ctc_reads_agree(exported, tmp_path, monkeypatch, {**older, "read_shifts": [-0.25, 0.0, 0.25]},
                              read_shifts=(-0.25, 0.0, 0.25))
    assert not np.allclose([c for _, c in once], [c for _, c in thrice])  # the shifted reads changed the probabilities


def test_example_ctc_reads_by_the_exports_beam_and_rescoring(exported, tmp_path, monkeypatch):
    """export.json carries ctc_beam and rescore; the example's beam search and its attention rescoring over
    decoder_step.onnx read what ``RecognitionHead.ctc_beam_search`` reads (older exports: the best path)."""
    model, out = exported
    meta = json.loads((out / "export.json").read_text())
    assert (meta["ctc_beam"], meta["rescore"]) == (model.rec_head.ctc_beam, model.rec_head.rescore) == (8, 0.3)
    older = {k: v for k, v in meta.items() if k not in ("ctc_beam", "rescore")}
    _ctc_reads_agree(exported, tmp_path, monkeypatch, older, ctc_beam=1, rescore=0.0)  # each: the same texts
    _ctc_reads_agree(exported, tmp_path, monkeypatch, {**older, "ctc_beam": 4}, ctc_beam=4, rescore=0.0)
    _ctc_reads_agree(exported, tmp_path, monkeypatch, {**older, "ctc_beam": 4, "rescore": 0.9},
                     ctc_beam=4, rescore=0.9)


def test_example_preprocessing_matches_image_folder(reader, pages):
    read_rgb = _load_example().read_rgb
    for path in pages:
        image, meta = ImageFolder([path], LONG_SIDE)[0]
        x, scale = reader.preprocess(read_rgb(path))
        assert scale == pytest.approx(meta["scale"])
        np.testing.assert_allclose(x, normalize(image[None]).numpy(), atol=1e-5, rtol=0)


def test_example_matches_model_forward(exported, reader, ctc_reader, pages, tmp_path, decoder):
    """The whole ONNX pipeline (the script on page 0, in-process on page 1) gives ``DocRecModel.forward``'s lines,
    with either decoder (``--decoder`` in the script; the model's ``decoder_kind`` in PyTorch)."""
    model, out = exported
    example = _load_example()
    for i, path in enumerate(pages):
        if i == 0:
            result = tmp_path / f"{path.stem}.json"
            flags = ["--decoder", "ctc"] if decoder == "ctc" else []  # attention: export.json's own decoder
            proc = subprocess.run([sys.executable, "examples/onnx_predict.py", str(out), str(path), "--json",
                                   str(result), *flags], check=False, cwd=REPO, env=ENV, capture_output=True,
                                  text=True, timeout=300)
            assert proc.returncode == 0, proc.stderr[-3000:]
            got = json.loads(result.read_text())["lines"]
        else:
            got = (ctc_reader if decoder == "ctc" else reader)(example.read_rgb(path))
        image, meta = ImageFolder([path], LONG_SIDE)[0]
        ref = model(normalize(image[None]))[0]["lines"]
        assert len(got) == len(ref) == 1  # thresholds at 0: the page is one line
        assert any(r["text"] for r in ref)
        for g, r in zip(got, ref):
            assert (g["kind"], g["text"], g["region"]) == (r["kind"], r["text"], r["region"])
            assert g["confidence"] == pytest.approx(r["confidence"], abs=1e-3)
            poly = np.asarray(r["polygon"]) / meta["scale"]
            poly = np.stack([poly[:, 0].clip(0, meta["width"]), poly[:, 1].clip(0, meta["height"])], axis=1)
            np.testing.assert_allclose(g["polygon"], poly, atol=0.06)


def test_example_runs_without_torch(exported, pages):
    """The example's own imports are onnxruntime, NumPy and OpenCV; its docrec imports must not pull torch."""
    code = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = sys.argv[1:]; "
            "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code, "examples/onnx_predict.py", str(exported[1]), str(pages[0])],
                          check=False, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_reader_with_a_pixel_stem_exports_and_reads_the_image(tmp_path, pages):
    """encoder.onnx takes the image too (export.json's pixel_stem) and matches PyTorch; the example feeds it."""
    model, out = _export_random_model(tmp_path, [*MODEL_OVERRIDES[:-1], "model.recognition.pixel_stem=4"])
    meta = json.loads((out / "export.json").read_text())
    assert meta["pixel_stem"] is True
    session = ort.InferenceSession(str(out / ENCODER_FILE))
    assert [i.name for i in session.get_inputs()] == ["fused", "quads", "image"]
    torch.manual_seed(5)
    x = torch.randn(1, 3, 192, 256)
    quads = _quads()
    with torch.no_grad():
        fused = model.fused_map(x)
        ref_memory, ref_padding = model.rec_head.encode(fused, [quads], x)
    memory, padding = session.run(["memory", "memory_padding"],
                                  {"fused": fused.numpy(), "quads": quads.numpy(), "image": x.numpy()})
    w = ref_memory.shape[1]
    valid = ~ref_padding.numpy()
    np.testing.assert_array_equal(padding[:, :w], ref_padding.numpy())
    np.testing.assert_allclose(memory[:, :w][valid], ref_memory.numpy()[valid], atol=ATOL, rtol=0)
    reader = _load_example().OnnxPageReader(out)
    with pytest.raises(ValueError, match="pixel stem"):
        reader.read(fused.numpy(), quads.numpy())
    image, _ = ImageFolder([pages[0]], LONG_SIDE)[0]
    got = reader(_load_example().read_rgb(pages[0]))
    ref = model(normalize(image[None]))[0]["lines"]
    assert [g["text"] for g in got] == [r["text"] for r in ref] and any(r["text"] for r in ref)
