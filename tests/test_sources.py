"""Mixed data sources: weighted, resumable sampling; config checks; per-source validation and exact resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from docrec.data.dataset import PageDataset, collate
from docrec.data.loading import load_splits
from docrec.data.sampler import ResumableSampler, WeightedSourceSampler
from docrec.engine import checkpoint as ckpt
from docrec.engine.config import ConfigError, check_config
from docrec.engine.runtime import Runtime
from docrec.engine.validate import run_validation
from docrec.text import Charset
from tests.conftest import REPO, compose_cfg, make_toy_pages


def _source(index: int, sizes: list[int]) -> int:
    """The source of a sampled index (``page + pass * total``)."""
    page = index % sum(sizes)
    return next(s for s in range(len(sizes)) if page < sum(sizes[: s + 1]))


def _epochs(sampler, epochs: int) -> list[int]:
    out = []
    for e in range(epochs):
        sampler.set_epoch(e)
        out += list(sampler)
    return out


# ---- the sampler


def test_counts_over_an_epoch_follow_the_weights():
    sizes = [30, 10]
    s = WeightedSourceSampler(sizes, [3.0, 1.0], epoch_pages=400, seed=7)
    for e in range(3):
        s.set_epoch(e)
        assert len(s) == 400
        assert Counter(_source(i, sizes) for i in s) == {0: 300, 1: 100}
    # Shares that do not divide the epoch: every epoch has exactly epoch_pages draws, each source within
    # 2 of its share per epoch and within 1 of it over any number of epochs.
    sizes = [7, 50, 3]
    s = WeightedSourceSampler(sizes, [1.0, 1.0, 0.5], epoch_pages=101, seed=0)
    totals = Counter()
    for e in range(20):
        s.set_epoch(e)
        counts = Counter(_source(i, sizes) for i in s)
        assert sum(counts.values()) == 101
        totals += counts
        for src, share in enumerate((0.4, 0.4, 0.2)):
            assert abs(counts[src] - 101 * share) < 2
            assert abs(totals[src] - (e + 1) * 101 * share) < 1


def test_order_is_a_pure_function_of_seed_and_epoch():
    a = _epochs(WeightedSourceSampler([30, 10], [3, 1], epoch_pages=400, seed=7), 3)
    b = _epochs(WeightedSourceSampler([30, 10], [3, 1], epoch_pages=400, seed=7), 3)
    assert a == b
    assert a != _epochs(WeightedSourceSampler([30, 10], [3, 1], epoch_pages=400, seed=8), 3)
    s = WeightedSourceSampler([30, 10], [3, 1], epoch_pages=400, seed=7)
    s.set_epoch(2)  # straight to epoch 2, without iterating 0 and 1
    assert list(s) == a[800:]


def test_every_page_of_a_source_is_drawn_before_any_repeats():
    sizes = [7, 50, 3]  # source 0 and 2 go round several times per epoch, source 1 less than once
    draws = _epochs(WeightedSourceSampler(sizes, [1, 1, 0.5], seed=3), 6)
    for src, size in enumerate(sizes):
        first = sum(sizes[:src])
        mine = [i for i in draws if _source(i, sizes) == src]
        for k in range(0, len(mine) - size + 1, size):
            window = mine[k : k + size]
            assert sorted(i % sum(sizes) for i in window) == list(range(first, first + size))
            # One pass = one tag: a repeat of a page comes with its own augmentation seed.
            assert len({i // sum(sizes) for i in window}) == 1


def test_skip_resumes_exactly_and_ranks_share_the_epoch():
    s = WeightedSourceSampler([30, 10], [3, 1], epoch_pages=101, seed=1)
    s.set_epoch(4)
    full = list(s)
    s.set_epoch(4, skip=37)
    assert list(s) == full[37:] and len(s) == 101 - 37
    ranks = [WeightedSourceSampler([30, 10], [3, 1], epoch_pages=101, seed=1, rank=r, world_size=2)
             for r in range(2)]
    for r in ranks:
        r.set_epoch(4)
    shards = [list(r) for r in ranks]
    assert len(shards[0]) == len(shards[1]) == 51
    assert Counter(shards[0] + shards[1]) == Counter(full + full[:1])  # padded by repeating, as DistributedSampler


def test_single_source_order_is_unchanged():
    s = ResumableSampler(13, seed=5)
    s.set_epoch(3)
    assert list(s) == torch.randperm(13, generator=torch.Generator().manual_seed(5 * 7919 + 3)).tolist()


def test_sampler_refuses_a_source_without_a_page_per_epoch():
    with pytest.raises(ValueError, match="less than one page"):
        WeightedSourceSampler([10, 10], [1000, 1], epoch_pages=100)


def test_a_curriculum_moves_the_counts_from_weight_to_weight_end():
    sizes = [40, 40]
    # Draws 0-99 all from source 0, draws 300 on all from source 1, linear between (epochs of 50 draws).
    s = WeightedSourceSampler(sizes, [1.0, 0.0], epoch_pages=50, seed=2, end_weights=[0.0, 1.0], ramp=(100, 300))
    per_epoch = []
    for e in range(8):
        s.set_epoch(e)
        counts = Counter(_source(i, sizes) for i in s)
        assert sum(counts.values()) == 50
        per_epoch.append(counts[1])
    assert per_epoch[:3] == [0, 0, 0] and per_epoch[6:] == [50, 50]
    assert all(abs(a - b) <= 1 for a, b in zip(per_epoch[3:6], [12.5, 25, 37.5]))  # 1/4, 1/2, 3/4 of the ramp
    assert s.weights_at(4) == [0.5, 0.5]
    # Still a pure function of the epoch (exact resume), and every page of a source before any repeats.
    again = WeightedSourceSampler(sizes, [1.0, 0.0], epoch_pages=50, seed=2, end_weights=[0.0, 1.0], ramp=(100, 300))
    again.set_epoch(5)
    s.set_epoch(5)
    assert list(again) == list(s)
    draws = [i for i in _epochs(s, 8) if _source(i, sizes) == 1]
    assert sorted(i % 80 for i in draws[:40]) == list(range(40, 80))


def test_a_ramp_over_the_whole_run_matches_the_sum_of_its_epochs():
    """drawn() sums only the ramp's epochs; the counts equal a plain sum over every epoch's shares."""
    s = WeightedSourceSampler([9, 5, 30], [2.0, 0.0, 1.0], epoch_pages=17, seed=4,
                              end_weights=[0.5, 3.0, 1.0], ramp=(40, 260))
    mass = [0.0, 0.0, 0.0]
    for e in range(30):
        before, after = s.drawn(e), s.drawn(e + 1)
        counts = [b - a for a, b in zip(before, after)]
        assert sum(counts) == 17 and min(counts) >= 0
        w = s.weights_at(e)
        mass = [m + 17 * x / sum(w) for m, x in zip(mass, w)]
        assert all(abs(d - m) < 1 for d, m in zip(after, mass))  # within 1 of the schedule, epoch after epoch


def test_fixed_weights_give_the_same_order_with_or_without_a_flat_ramp():
    plain = _epochs(WeightedSourceSampler([30, 10], [3, 1], epoch_pages=40, seed=7), 3)
    flat = _epochs(WeightedSourceSampler([30, 10], [3, 1], epoch_pages=40, seed=7, end_weights=[3, 1],
                                         ramp=(0, 80)), 3)
    assert plain == flat


# ---- configs and splits


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sources")
    return make_toy_pages(root / "alpha", n_pages=4, seed=1), make_toy_pages(root / "beta", n_pages=4, seed=2)


def _sources(a: Path, b: Path, weights=(3, 1)) -> list[dict]:
    return [{"name": "alpha", "path": str(a / "train.jsonl"), "val_path": str(a / "val.jsonl"), "weight": weights[0]},
            {"name": "beta", "path": str(b / "train.jsonl"), "val_path": str(b / "val.jsonl"), "weight": weights[1]}]


def _with_sources(overrides: list[str], sources: list[dict]):
    cfg = compose_cfg(overrides)
    OmegaConf.update(cfg, "data.sources", sources, merge=False)
    return cfg


def test_mixed_config_composes_and_inherits_the_data_group(two_sources):
    a, b = two_sources
    cfg = compose_cfg(["data=mixed", f"data.path={a / 'train.jsonl'}", f"data.val_path={a / 'val.jsonl'}",
                       f"data.sources.1.path={b / 'train.jsonl'}", "data.sources.1.format=manifest"])
    check_config(cfg)
    splits = load_splits(cfg.data)
    # Source 0 takes path and val_path from the group; source 1 holds out every 20th page (its first).
    assert [(s.name, s.n_train, s.n_val) for s in splits.sources] == [("synthetic", 3, 1), ("pagexml", 2, 1)]
    assert len(splits.train) == 5 and splits.val_source_names() == ["synthetic", "pagexml"]
    assert {ln.kind for p in splits.train[3:] for ln in p.lines} == {"printed", "handwritten"}  # the file's kinds


def test_fold_case_is_set_per_source_and_reaches_the_pages_metadata(two_sources):
    # A source whose transcriptions drop case (an upper-cased export) is scored ignoring case; the other is not.
    sources = _sources(*two_sources)
    sources[1]["fold_case"] = True
    cfg = _with_sources([], sources)
    check_config(cfg)
    splits = load_splits(cfg.data)
    n_a = splits.sources[0].n_train
    assert [p.fold_case for p in splits.train] == [False] * n_a + [True] * (len(splits.train) - n_a)
    assert [p.fold_case for p in splits.val] == [False, True]
    ds = PageDataset(splits.val, Charset.build(["ab"]), ["printed", "handwritten"], 128, train=False)
    assert [ds[i][2]["fold_case"] for i in range(2)] == [False, True]
    # ...and the targets: the fold_case page's lines are read by a loss that ignores case (test_model.py)
    flags = [ds[i][1]["line_fold_case"] for i in range(2)]
    assert len(flags[1]) and flags[1].all() and not flags[0].any()
    # The data group's value is every source's default.
    cfg = _with_sources(["data.fold_case=true"], _sources(*two_sources))
    assert all(p.fold_case for p in load_splits(cfg.data).train)
    # Anything but true, false or null is refused before a page is read, naming the pages it is for.
    sources[1]["fold_case"] = "upper"
    with pytest.raises(ConfigError, match=r"fold_case of .*beta/train\.jsonl must be true, false or null.*'upper'"):
        load_splits(_with_sources([], sources).data)


class _ShoutingReader(torch.nn.Module):
    """Reads every ground-truth line right, in capitals (a fake model with the validation interface)."""

    def __init__(self, texts: list[list[str]]) -> None:
        super().__init__()
        self.rec_head = type("Head", (), {"decoder_kind": "ctc"})()
        self.rec_branches, self.region_kinds = {}, ()  # CTC alone, no region maps
        self.texts = iter(texts)

    def predict_and_read(self, images, quads, decoders):
        preds = [{"lines": [], "class_map": torch.zeros(images.shape[-2:], dtype=torch.long)} for _ in quads]
        return preds, {"ctc": [[(t.upper(), 1.0) for t in next(self.texts)] for _ in quads]}


def test_validation_scores_a_fold_case_source_ignoring_case(two_sources):
    sources = _sources(*two_sources)
    sources[1]["fold_case"] = True
    splits = load_splits(_with_sources([], sources).data)
    ds = PageDataset(splits.val, Charset.build(["ab"]), ["printed", "handwritten"], 128, train=False)
    texts = [[ln["text"] for ln in ds[i][2]["gt_lines"]] for i in range(len(ds))]
    assert all(any(t != t.upper() for t in page) for page in texts)  # each page has small letters
    loader = torch.utils.data.DataLoader(ds, batch_size=1, collate_fn=collate)
    rt = Runtime(torch.device("cpu"), "fp32", False)
    result = run_validation(_ShoutingReader(texts), loader, rt, ["printed", "handwritten"],
                            groups=splits.val_source_names())
    assert result.groups["beta"]["cer"] == 0.0 and result.groups["beta"]["bow_f1"] == 0.0  # no line detected
    assert result.groups["alpha"]["cer"] > 0.0  # its transcriptions keep case: the capitals are errors


@pytest.mark.parametrize(("change", "message"), [
    (lambda s: s[1].update(name="alpha"), r"data\.sources\[1\]\.name=alpha: another source has this name"),
    (lambda s: s[0].update(name=""), r"data\.sources\[0\]\.name must be a non-empty name"),
    (lambda s: s[1].update(name="a/b"), r"data\.sources\[1\]\.name must be"),
    (lambda s: s[1].update(weight=0), r"data\.sources\[1\]\.weight must be > 0(\.0)?, got 0"),
    (lambda s: s[0].update(path="/no/such/file.jsonl"), r"data\.sources\[0\]\.path=/no/such/file\.jsonl: no such"),
    (lambda s: s[1].update(path=None), r"data\.sources\[1\]\.path is required.*data\.sources\.1\.path="),
    (lambda s: s[1].update(val_path="/nope"), r"data\.sources\[1\]\.val_path=/nope: no such"),
    (lambda s: s[1].update(wieght=2), r"data\.sources\[1\]\.wieght: unknown key"),
])
def test_config_errors_name_the_key(two_sources, change, message):
    sources = _sources(*two_sources)
    change(sources)
    with pytest.raises(ConfigError, match=message):
        check_config(_with_sources([], sources))


@pytest.mark.parametrize(("ramp", "change", "message"), [
    (None, lambda s: s[1].update(weight_end=2), r"data\.sources\[1\]\.weight_end=2 needs data\.weight_ramp"),
    ("[10,5]", lambda s: s[1].update(weight_end=2), r"data\.weight_ramp must be \[start_step, end_step\]"),
    ("[0,5]", lambda s: s[1].update(weight=0, weight_end=0), r"data\.sources\[1\]: weight and weight_end are both 0"),
    ("[0,5]", lambda s: s[0].update(weight_end=-1), r"data\.sources\[0\]\.weight_end must be >= 0"),
    ("[0,5]", lambda s: [x.update(weight_end=0) for x in s], r"every source's weight_end is 0"),
])
def test_curriculum_errors_name_the_key(two_sources, ramp, change, message):
    sources = _sources(*two_sources)
    change(sources)
    with pytest.raises(ConfigError, match=message):
        check_config(_with_sources([] if ramp is None else [f"data.weight_ramp={ramp}"], sources))


def test_a_curriculum_reaches_the_sampler(two_sources):
    from docrec.data.loading import make_loaders
    from docrec.text import Charset

    sources = _sources(*two_sources, weights=(1, 0))
    sources[0]["weight_end"], sources[1]["weight_end"] = 0, 1
    cfg = _with_sources([*TINY, "data.weight_ramp=[1,2]", "data.epoch_pages=2"], sources)
    check_config(cfg)
    splits = load_splits(cfg.data)
    assert [(s.weight, s.weight_end) for s in splits.sources] == [(1.0, 0.0), (0.0, 1.0)]
    _, _, batches = make_loaders(splits, Charset.build(["ab"]), cfg.data, None, seed=0, rank=0, world=1)
    sampler = batches.sampler  # ramp in pages: steps 1-2 at batch 2 -> draws 2-4
    assert sampler.ramp == (2, 4) and sampler.weights_at(0) == [1.0, 0.0] and sampler.weights_at(2) == [0.0, 1.0]


def test_epoch_too_short_for_a_weight_names_the_source(two_sources):
    cfg = _with_sources(["data.epoch_pages=10"], _sources(*two_sources, weights=(100, 1)))
    with pytest.raises(ConfigError, match=r"data\.sources\[1\]\.weight=1: less than one of data\.epoch_pages=10"):
        check_config(cfg)


# ---- end to end: per-source validation tags and exact resume

TINY = ["experiment=smoke", "model.backbone.name=resnet18", "data.long_side=192", "data.num_workers=0",
        "model.recognition.d_model=64", "model.recognition.dim_feedforward=128", "model.fpn_channels=64",
        "model.recognition.encoder_layers=1", "model.recognition.decoder_layers=1", "trainer.val_raw=false",
        "data.batch_size=2", "trainer.max_steps=3", "trainer.val_every=100", "trainer.log_every=1",
        "trainer.ckpt_every=2"]


def _stop_after(monkeypatch, step: int) -> None:
    """SIGTERM the trainer once it has saved ``step`` (as a scheduler would): it saves and stops there."""
    save, fired = ckpt.save_atomic, []

    def save_then_signal(state, path):
        out = save(state, path)
        if state["step"] == step and not fired:
            fired.append(step)
            os.kill(os.getpid(), signal.SIGTERM)
        return out

    monkeypatch.setattr(ckpt, "save_atomic", save_then_signal)


@pytest.mark.slow
def test_two_sources_validate_per_source_and_resume_exactly(two_sources, tmp_path, monkeypatch, capsys):
    from docrec.engine.trainer import train

    sources = _sources(*two_sources)  # 3 + 3 training pages: epochs of 6 draws, 3 steps of 2 pages
    metrics = train(_with_sources(TINY, sources), tmp_path / "full")
    out = capsys.readouterr().out
    assert "2 sources: epochs of 6 draws" in out and "source    alpha: 3 train / 1 val pages, weight 3 (75% of" in out
    assert metrics["val/ema/n_pages"] == 2
    assert metrics["val/ema/alpha/n_pages"] == metrics["val/ema/beta/n_pages"] == 1
    # each source's figures in the final summary too, not in TensorBoard only
    alpha = next(ln for ln in out.splitlines() if ln.startswith("  source    ema alpha: "))
    assert f"cer={metrics['val/ema/alpha/cer']:.4f}" in alpha and "det_f1=" in alpha and "  source    ema beta: " in out
    ea = EventAccumulator(str(tmp_path / "full" / "tb"), size_guidance={"scalars": 0})
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    for name in ("alpha", "beta"):
        for metric in ("det_f1", "cer", "e2e_f1", "seg_miou"):
            assert f"val/ema/{name}/{metric}" in tags
    assert {"val/ema/det_f1", "val/ema/cer"} <= tags  # the overall figures keep their tags (monitor)
    assert [e.step for e in ea.Scalars("val/ema/beta/det_f1")] == [3]

    # Stopped inside the first epoch (after 2 of its 3 batches), resumed to step 3.
    with monkeypatch.context() as m:
        _stop_after(m, 2)
        train(_with_sources(TINY, sources), tmp_path / "part")
    state = ckpt.load(tmp_path / "part" / "checkpoints" / "last.pt")
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (2, 0, 2)
    train(_with_sources([*TINY, f"resume={tmp_path / 'part'}"], sources), tmp_path / "part")
    assert "resumed at step 2" in capsys.readouterr().out
    a = ckpt.load(tmp_path / "full" / "checkpoints" / "last.pt")
    b = ckpt.load(tmp_path / "part" / "checkpoints" / "last.pt")
    for key in ("model", "ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), f"{key}.{k} differs after resume"

    # evaluate.py reads every source's validation pages: a table over all, then one per source.
    listed = ", ".join(f"{{name: {s['name']}, path: '{s['path']}', val_path: '{s['val_path']}'}}" for s in sources)
    proc = subprocess.run([sys.executable, "scripts/evaluate.py", f"checkpoint={tmp_path / 'full'}",
                           f"hydra.run.dir={tmp_path / 'eval'}", "data.num_workers=0", f"data.sources=[{listed}]"],
                          cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "\nsource alpha\nmetric" in proc.stdout and "\nsource beta\nmetric" in proc.stdout
    summary = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert summary["n_pages"] == 2 and {k: v["n_pages"] for k, v in summary["sources"].items()} == {"alpha": 1,
                                                                                                   "beta": 1}
    assert summary["n_gt_lines"] == sum(v["n_gt_lines"] for v in summary["sources"].values())


def test_each_source_gets_a_log_line_of_its_headline_metrics():
    from docrec.engine.report import by_source, headline

    metrics = {"val/ema/cer": 0.3, "val/ema/n_pages": 4, "val/ema/funsd/cer": 0.25, "val/ema/funsd/n_pages": 2,
               "val/ema/funsd/det_f1": 0.75, "val/raw/sroie/cer": 0.5, "val/ema/sroie/bow_f1": 0.4,
               "train/loss": 1.0}
    assert by_source(metrics) == ["ema funsd: cer=0.2500, det_f1=0.7500", "raw sroie: cer=0.5000",
                                  "ema sroie: bow_f1=0.4000"]
    assert headline(metrics) == "val/ema/cer=0.3000"  # the overall line keeps the sources out
    assert by_source({"val/ema/cer": 0.3}) == []  # one source: nothing more to say
