"""CUDA-only checks: a bf16 + channels_last training step, compiled regions = eager, predictions on the GPU.

Selected by ``pytest -m gpu`` (scripts/gpu_check.sh); skipped where no CUDA device is present.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from docrec.data.dataset import normalize
from docrec.data.targets import build_targets
from docrec.engine.runtime import setup
from docrec.models import Charset, build_model
from tests.conftest import compose_cfg

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

KINDS = ["printed", "handwritten"]
REGION_KINDS = ["form_field"]
TEXTS = ["Invoice 4711", "total 12.50 EUR", "Paris, le 3 mai", "Name:", "signature", "ok"]
#: A small model (resnet18, narrow heads) for the compile test: compilation time grows with regions, not size.
SMALL = {
    "backbone": {"name": "resnet18", "p_min": 0.8, "seed": 0},
    "fpn_channels": 64,
    "segmentation": {"hidden": 32},
    "recognition": {"d_model": 64, "nhead": 4, "encoder_layers": 1, "decoder_layers": 1, "dim_feedforward": 128,
                    "dropout": 0.0, "roi_height": 8, "roi_max_width": 64, "max_len": 24, "quad_jitter": 0.0},
    "label_smoothing": 0.0,
}


@pytest.fixture(scope="module")
def charset() -> Charset:
    return Charset.build(TEXTS)


def _batch(charset: Charset, device: torch.device, n: int = 2, size: int = 256, max_len: int = 24):
    """uint8 pages with dark text-line boxes, and their targets, on ``device``."""
    rng = np.random.default_rng(0)
    images, targets = [], []
    for _ in range(n):
        img = np.full((size, size, 3), 255, np.uint8)
        lines = []
        for j, text in enumerate(TEXTS):
            x0, y0 = int(rng.integers(4, size // 3)), 12 + j * (size - 24) // len(TEXTS)
            w = 8 * len(text)
            img[y0 + 2:y0 + 12, x0:x0 + w] = rng.integers(0, 80, (10, w, 3), dtype=np.uint8)
            poly = np.array([[x0, y0], [x0 + w, y0], [x0 + w, y0 + 14], [x0, y0 + 14]], np.float32)
            lines.append((poly, text, KINDS[j % 2]))
        # The last two lines are the values of a form field.
        field = np.concatenate([lines[-2][0], lines[-1][0]])
        x0, y0, x1, y1 = field[:, 0].min() - 2, field[:, 1].min() - 2, field[:, 0].max() + 2, field[:, 1].max() + 2
        regions = [(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32), "form_field")]
        images.append(torch.from_numpy(img).permute(2, 0, 1))
        t = build_targets(lines, size, size, KINDS, charset, max_len, regions=regions, region_kinds=REGION_KINDS)
        targets.append({k: v.to(device) for k, v in t.items()})
    return torch.stack(images).to(device), targets


def _no_dropout(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0


def test_bf16_channels_last_training_step_of_the_default_model(charset):
    rt = setup("cuda", "auto", "auto")
    assert rt.precision == "bf16" and rt.channels_last
    torch.manual_seed(0)
    model = build_model(OmegaConf.to_container(compose_cfg().model, resolve=True), charset).to(rt.device).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    images, targets = _batch(charset, rt.device, size=320)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    model.set_step(0)
    with rt.autocast():
        losses = model(x, targets)
    assert set(losses) == {"seg", "core", "region", "rec", "ctc"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    ran = set(model.backbone.last_executed)
    for name, p in model.named_parameters():
        if p.grad is not None:
            assert torch.isfinite(p.grad).all(), name
    # A block dropped in this step has no gradient; every block that ran, and every head, has one.
    for entry in model.backbone.schedule():
        block = model.backbone.get_submodule(entry["name"])
        has_grad = all(p.grad is not None for p in block.parameters())
        assert has_grad == (entry["index"] in ran), f"{entry['name']}: ran={entry['index'] in ran}, grads={has_grad}"
    assert all(p.grad is not None for p in model.rec_head.parameters())
    opt.step()
    changed = [n for n, p in model.named_parameters() if not torch.equal(p, before[n])]
    assert any(n.startswith("rec_head.") for n in changed) and any(n.startswith("neck.") for n in changed)
    assert model.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_compiled_regions_equal_eager_on_cuda(charset):
    rt = setup("cuda", "fp32", False)
    # Exact fp32 on both sides: TF32 convolutions/matmuls would differ by more than compilation does.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        eager = build_model({**SMALL, "kinds": KINDS}, charset).to(rt.device).train()
        _no_dropout(eager)
        compiled = copy.deepcopy(eager)
        compiled.compile_regions()  # inductor, the trainer's default
        images, targets = _batch(charset, rt.device)
        x = normalize(images)
        for step in range(3):  # different drop patterns reuse the compiled blocks
            out = {}
            for name, m in (("eager", eager), ("compiled", compiled)):
                m.zero_grad(set_to_none=True)
                m.set_step(step)
                torch.manual_seed(step)  # same line subset / jitter on both sides
                losses = m(x, targets)
                sum(losses.values()).backward()
                out[name] = (losses, m.backbone.conv1.weight.grad.clone(), list(m.backbone.last_executed))
            (le, ge, re), (lc, gc, rc) = out["eager"], out["compiled"]
            assert re == rc
            for k in le:
                torch.testing.assert_close(lc[k], le[k], rtol=1e-3, atol=1e-4, msg=f"step {step} loss {k}")
            torch.testing.assert_close(gc, ge, rtol=1e-2, atol=1e-4)
        eager.eval()
        compiled.eval()
        with torch.no_grad():
            a, b = eager._maps(x), compiled._maps(x)
        for u, v in zip(a, b):
            torch.testing.assert_close(v, u, rtol=1e-3, atol=1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def test_bf16_predictions_and_reading_on_cuda(charset):
    rt = setup("cuda", "auto", "auto")
    torch.manual_seed(0)
    model = build_model({**SMALL, "kinds": KINDS}, charset).to(rt.device).to(memory_format=torch.channels_last)
    model.eval()
    images, targets = _batch(charset, rt.device, size=192)
    x = normalize(images).contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        preds = model(x)
        reads = model.recognize(x, [t["line_quads"] for t in targets])
    assert len(preds) == 2
    for p in preds:
        assert p["class_map"].shape == (192, 192) and p["class_map"].device.type == "cpu"
        for line in p["lines"]:
            assert line["kind"] in KINDS and isinstance(line["text"], str) and 0.0 <= line["confidence"] <= 1.0
    assert [len(r) for r in reads] == [len(TEXTS)] * 2
    assert all(isinstance(text, str) and 0.0 <= conf <= 1.0 for r in reads for text, conf in r)


def test_reader_stage_step_from_a_host_bank_in_bf16(charset):
    """trainer.stage=reader on the GPU: maps computed under bf16 autocast, kept on the host in bfloat16, drawn
    back to the device in float32, and a reading step whose gradients reach the recognition head alone."""
    from docrec.engine.reader_stage import FeatureBank, freeze_all_but_reader, reader_batches

    rt = setup("cuda", "auto", "auto")
    torch.manual_seed(0)
    model = build_model({**SMALL, "kinds": KINDS, "recognition": {**SMALL["recognition"], "pixel_stem": 16}},
                        charset).to(rt.device).to(memory_format=torch.channels_last).train()
    freeze_all_but_reader(model)
    images, targets = _batch(charset, rt.device, n=4)
    bank = FeatureBank(model, rt, capacity=4)
    bank.add((images.cpu(), [{k: v.cpu() for k, v in t.items()} for t in targets], [{}] * 4))
    assert len(bank) == 4 and bank.maps[0].device.type == "cpu" and bank.maps[0].dtype == torch.bfloat16
    pages, lines, _, fused = next(reader_batches(bank, iter([None]), crops_per_step=3, refresh_every=2))
    assert fused.device.type == "cuda" and fused.dtype == torch.float32 and fused.shape[0] == 3
    x = normalize(pages.to(rt.device)).contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        losses = model(x, [{k: v.to(rt.device) for k, v in t.items()} for t in lines], fused=fused)
    assert set(losses) == {"rec", "ctc"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.rec_head.parameters())
    assert all(p.grad is None for p in model.backbone.parameters()) and all(
        p.grad is None for p in model.neck.parameters())
