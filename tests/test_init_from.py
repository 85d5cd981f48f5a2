"""init_from: weights-only starts with charset growth and kinds matched by name; frozen BatchNorm."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from docrec.engine.config import ConfigError
from docrec.engine.init_from import check_architecture, grow_charset, transfer
from docrec.engine.optim import build_optimizer
from docrec.models import build_model
from docrec.models.stochastic_depth import build_backbone
from docrec.text import Charset
from tests.conftest import REPO
from tests.test_model import TINY, batch

OLD = Charset.build(["hello world", "42"])


def tiny(charset: Charset, kinds=("printed", "handwritten"), regions=("form_field",), seed=0, **extra):
    torch.manual_seed(seed)
    return build_model({**TINY, "kinds": list(kinds), "region_kinds": list(regions), **extra}, charset)


def test_grow_charset_keeps_every_known_id_and_appends_new_symbols():
    new, extra = grow_charset(OLD, ["héllo", "€ 42"])
    assert extra == sorted(["é", "€"]) and new.chars[: len(OLD.chars)] == OLD.chars
    assert all(new.encode(t)[1:-1] == OLD.encode(t)[1:-1] for t in ["hello world", "42"])
    assert grow_charset(OLD, ["hello"]) == (OLD, [])


def test_transfer_copies_known_rows_and_keeps_fresh_rows_for_new_symbols_and_kinds():
    old = tiny(OLD, kinds=("printed", "handwritten"), regions=("form_field",), seed=1)
    new_charset, extra = grow_charset(OLD, ["ü!"])
    fresh = tiny(new_charset, kinds=("handwritten", "printed", "stamp"), regions=(), seed=2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    report = transfer(fresh, old.state_dict(), "ckpt.pt", OLD, new_charset, ["printed", "handwritten"],
                      ["handwritten", "printed", "stamp"], ["form_field"], [])
    sd, src = fresh.state_dict(), old.state_dict()
    # A tensor known to both is equal after the transfer.
    torch.testing.assert_close(sd["backbone.conv1.weight"], src["backbone.conv1.weight"])
    # Charset growth: old rows equal, new rows present and untouched.
    n = len(OLD)
    for name in ("rec_head.embed.weight", "rec_head.classifier.weight", "rec_head.ctc_head.bias"):
        torch.testing.assert_close(sd[name][:n], src[name])
        assert sd[name].shape[0] == len(new_charset) == n + len(extra)
        torch.testing.assert_close(sd[name][n:], before[name][n:])
    # Kinds by name: background, handwritten, printed, core copied from their old rows; stamp fresh.
    out, old_out = sd["seg_head.out.weight"], src["seg_head.out.weight"]
    for new_i, old_i in ((0, 0), (1, 2), (2, 1), (4, 3)):
        torch.testing.assert_close(out[new_i], old_out[old_i])
    torch.testing.assert_close(out[3], before["seg_head.out.weight"][3])
    assert "rec_head.embed.weight" in report.reshaped and "seg_head.out.weight" in report.reshaped
    assert report.new_symbols == extra and "2 new symbols" in report.summary()


def test_another_architecture_is_refused_naming_the_keys():
    ckpt = {**TINY, "backbone": {**TINY["backbone"], "name": "resnet34"}}
    with pytest.raises(ConfigError, match=r"model.backbone.name: resnet34 \(checkpoint\) vs resnet18 \(this run\)"):
        check_architecture("run/last.pt", ckpt, TINY)
    check_architecture("run/last.pt", TINY, {**TINY, "postprocess": {"min_score": 0.1}})
    # A checkpoint from before model.neck existed used the FPN neck: refused for a light-neck run, taken by an fpn one.
    legacy = {k: v for k, v in TINY.items() if k != "neck"}
    with pytest.raises(ConfigError, match=r"model.neck: fpn \(checkpoint\) vs light"):
        check_architecture("run/last.pt", legacy, {**TINY, "neck": "light"})
    check_architecture("run/last.pt", legacy, {**TINY, "neck": "fpn"})
    # Before model.recognition.token_norm existed the head had no norm on its tokens.
    normed = {**TINY, "recognition": {**TINY["recognition"], "token_norm": True}}
    with pytest.raises(ConfigError, match=r"model.recognition.token_norm: False \(checkpoint\) vs True"):
        check_architecture("run/last.pt", TINY, normed)
    check_architecture("run/last.pt", TINY, {**TINY, "recognition": {**TINY["recognition"], "token_norm": False}})
    old = tiny(OLD)
    other = build_model({**TINY, "fpn_channels": 32, "region_kinds": ["form_field"]}, OLD)
    with pytest.raises(ConfigError, match="tensor neck.*has shape"):
        transfer(other, old.state_dict(), "x.pt", OLD, OLD, ["printed", "handwritten"], ["printed", "handwritten"],
                 ["form_field"], ["form_field"])


def test_frozen_batchnorm_keeps_its_statistics_and_frozen_stages_get_no_gradients():
    torch.manual_seed(0)
    trained = build_backbone("resnet18")
    frozen = build_backbone("resnet18", norm="frozen", frozen_stages=2)
    missing, unexpected = frozen.load_state_dict(trained.state_dict(), strict=False)
    assert not missing and all(k.endswith("num_batches_tracked") for k in unexpected)
    buffers = {k: v.clone() for k, v in frozen.named_buffers()}
    frozen.train()
    frozen.set_step(0)
    out = frozen(torch.randn(2, 3, 64, 64) * 3 + 1)
    sum(v.sum() for v in out.values()).backward()
    for k, v in frozen.named_buffers():
        torch.testing.assert_close(v, buffers[k])  # no running-stat updates
    assert frozen.conv1.weight.grad is None and all(p.grad is None for p in frozen.layer1.parameters())
    assert frozen.layer2[0].conv1.weight.grad is not None


def test_frozen_stages_freeze_the_backbone_from_the_input_up():
    for k, trained in ((3, "layer3"), (4, "layer4")):
        net = build_backbone("resnet18", norm="frozen", frozen_stages=k)
        frozen = ["conv1", "bn1", "layer1", "layer2", "layer3"][:k + 1]  # stem (two modules), then one layer each
        assert not any(p.requires_grad for name in frozen for p in getattr(net, name).parameters()), k
        assert all(p.requires_grad for p in getattr(net, trained).parameters()), k
    for bad in (-1, 6, True, 2.5):
        with pytest.raises(ValueError, match="frozen_stages must be 0 .none. to 5"):
            build_backbone("resnet18", frozen_stages=bad)


def test_a_model_with_the_whole_backbone_frozen_trains_its_neck_and_heads():
    # frozen_stages=5: no backbone parameter learns, the optimizer has no backbone group, and the
    # neck and heads still get their gradients (the backward pass stops at the neck).
    charset = Charset.build(["hi 42", "cat", "Ok go", "box 7", "zap"])
    learning = {}
    for k in (0, 5):
        model = build_model({**TINY, "backbone": {**TINY["backbone"], "norm": "frozen", "frozen_stages": k}}, charset)
        images, targets = batch(charset)
        losses = model.train()(images, targets)
        sum(losses.values()).backward()
        learning[k] = {n for n, p in model.named_parameters() if p.grad is not None}
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert not any(n.startswith("backbone.") for n in learning[5])
    assert learning[5] == {n for n in learning[0] if not n.startswith("backbone.")}  # neck and heads as before
    assert any(n.startswith("neck.") for n in learning[5]) and "seg_head.out.weight" in learning[5]
    opt = build_optimizer(model, OmegaConf.create({"lr": 1e-3, "backbone_lr_scale": 0.1, "weight_decay": 0.05,
                                                   "betas": [0.9, 0.999]}))
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not in_opt & {id(p) for p in model.backbone.parameters()}
    assert {g["lr"] for g in opt.param_groups} == {1e-3}


def test_a_model_with_frozen_norm_trains_on_a_batch():
    charset = Charset.build(["hi 42", "cat", "Ok go", "box 7", "zap"])
    model = build_model({**TINY, "backbone": {**TINY["backbone"], "norm": "frozen", "frozen_stages": 1}}, charset)
    images, targets = batch(charset)
    stats = {k: v.clone() for k, v in model.backbone.named_buffers() if "running" in k}
    losses = model.train()(images, targets)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert model.backbone.conv1.weight.grad is None and model.seg_head.out.weight.grad is not None
    assert all(torch.equal(v, stats[k]) for k, v in model.backbone.named_buffers() if "running" in k)


def test_cpu_runs_are_told_their_measured_speed_and_eta():
    from types import SimpleNamespace

    from docrec.engine.runtime import cpu_speed_note

    cpu, gpu = SimpleNamespace(device=torch.device("cpu")), SimpleNamespace(device=torch.device("cuda"))
    assert cpu_speed_note(gpu, 1.0, 10**6) is None
    short = cpu_speed_note(cpu, 3.3, 900)
    assert short == "cpu: 3.3 s per step measured, 900 steps to go: about 50 min"
    long = cpu_speed_note(cpu, 12.0, 60000)
    assert "about 200.0 h" in long and "sized for a GPU; without one, `experiment=cpu`" in long
    # Already on experiment=cpu: the machine is slower than the experiment assumes, not the config wrong.
    busy = cpu_speed_note(cpu, 9.0, 1260, experiments=["cpu", "finetune_funsd"])
    assert busy.startswith("cpu: 9.0 s per step measured, 1260 steps to go: about 3.1 h. experiment=cpu is sized "
                           "for about an hour on 2 idle cores: this machine is slower")
    assert "sized for a GPU" not in busy


def test_the_experiments_of_a_hydra_run_are_read_from_its_choices(tmp_path):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from docrec.engine.runtime import hydra_choices

    assert hydra_choices("experiment") == []  # outside a Hydra run
    for overrides, expected in ((["experiment=cpu"], ["cpu"]), (["trainer.max_steps=3"], []),
                                (["experiment=[cpu,finetune_funsd]", "seed=1"], ["cpu", "finetune_funsd"])):
        with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
            cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            assert hydra_choices("experiment") == expected
        finally:
            HydraConfig.instance().cfg = None


@pytest.mark.slow
def test_init_from_a_smoke_run_on_pages_with_new_symbols(toy_data, tmp_path, capsys):
    """experiment=smoke, then init_from=RUN on PAGE-XML pages holding symbols the first run never saw."""
    import os
    from pathlib import Path

    from docrec.engine import checkpoint as ckpt
    from docrec.engine.trainer import train
    from docrec.formats import load, pagexml
    from tests.conftest import compose_cfg
    from tests.test_train import TINY as TRAIN_TINY

    short = ["trainer.max_steps=2", "trainer.val_every=2", "trainer.log_every=1"]
    first = tmp_path / "first"
    train(compose_cfg([*TRAIN_TINY, f"data.path={toy_data / 'train.jsonl'}",
                       f"data.val_path={toy_data / 'val.jsonl'}", *short]), first)
    pages_dir = tmp_path / "pages"
    for page in load("manifest", toy_data / "train.jsonl").pages:
        for line in page.lines:
            line.text += " €ü"
        pagexml.write(page, pages_dir / f"{Path(page.image).stem}.xml",
                      image_name=os.path.relpath(page.image_path, pages_dir))
    capsys.readouterr()
    second = tmp_path / "second"
    train(compose_cfg([*TRAIN_TINY, "data=pagexml", f"data.path={pages_dir}", "data.allow_outside_root=true",
                       f"init_from={first}", *short]), second)
    out = capsys.readouterr().out
    assert f"init_from {first}" in out and "2 new symbols ('ü€')" in out and "tensors loaded" in out
    old, new = (ckpt.load(run / "checkpoints" / "last.pt") for run in (first, second))
    assert new["charset"]["chars"][: len(old["charset"]["chars"])] == old["charset"]["chars"]
    assert set(new["charset"]["chars"]) - set(old["charset"]["chars"]) == {"€", "ü"}
    assert new["step"] == 2  # a new run from step 0, not a resumed one
    torch.testing.assert_close(new["model"]["rec_head.embed.weight"].shape[0], len(new["charset"]["chars"]) + 4)


@pytest.mark.parametrize("experiment", ["finetune", "finetune_funsd", "finetune_handwriting", "[cpu,finetune_funsd]",
                                        "[cpu,finetune]"])
def test_finetune_experiments_compose_mix_synthetic_pages_and_freeze_norms(experiment, tmp_path):
    from docrec.engine.config import check_config, data_sources
    from tests.conftest import compose_cfg

    (tmp_path / "pages").mkdir()
    pages = tmp_path / "pages"  # (the synthetic source takes data.path: not generated in a fresh clone)
    cfg = compose_cfg([f"experiment={experiment}", f"data.sources.0.path={pages}", f"data.path={pages}",
                       f"data.val_path={pages}"])
    check_config(cfg)
    sources = data_sources(cfg.data)
    assert [s["name"] for s in sources][1] == "synthetic" and sources[0]["weight"] == 7 * sources[1]["weight"]
    # The stem and layer1 frozen (cheaper steps, the same learning per step on print); the hands' recipe keeps layer1.
    assert cfg.model.backbone.norm == "frozen"
    assert cfg.model.backbone.frozen_stages == (1 if "handwriting" in experiment else 2)
    # Hands are read once per box (three reads' mean falls silent on them); print three times.
    assert list(cfg.model.recognition.read_shifts) == ([0.0] if "handwriting" in experiment else [-0.1, 0.0, 0.1])
    # The pretrained features move slower than any pretraining moved them; the heads may move faster
    # (5e-4: measured against 2e-4 after experiment=cpu, docs/results.md "Learning rates per part").
    assert cfg.optim.lr * cfg.optim.backbone_lr_scale < compose_cfg([]).optim.lr
    # Real pages are augmented (geometric + photometric) even on experiment=cpu, which keeps none,
    # and the backbone moves slower than the heads.
    assert cfg.augment.enabled and cfg.augment.affine.p > 0 and cfg.augment.brightness_contrast.p > 0
    assert 0 < cfg.optim.backbone_lr_scale < 1
