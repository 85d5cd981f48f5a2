"""Config errors fail at start-up with a message naming the key."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from docrec.engine.config import CONFIG_DIR, ConfigError, check_config
from docrec.settings import abs_path
from tests.conftest import compose_cfg


def _with_data(tmp_path, overrides):
    (tmp_path / "t.jsonl").write_text("")
    return compose_cfg([f"data.path={tmp_path / 't.jsonl'}", "data.val_path=null", *overrides])


def _group(name: str) -> list[str]:
    return sorted(f.stem for f in (CONFIG_DIR / name).glob("*.yaml"))


#: Experiments that combine with another (finetune goes on top of a training recipe).
_ON_TOP = {"finetune": ["experiment=[cpu,finetune]"], "curriculum": ["experiment=[cpu,curriculum]"]}


@pytest.mark.parametrize("override", [
    *[o for name in _group("experiment") for o in _ON_TOP.get(name, [f"experiment={name}"])],
    *[f"data={name}" for name in _group("data")], *[f"augment={name}" for name in _group("augment")]])
def test_every_experiment_data_and_augment_config_composes_checks_and_builds_its_model(tmp_path, override):
    # Every file of those groups, as a user would pick it: composed, checked, its model built.
    from docrec.models import build_model
    from docrec.text import Charset

    cfg = _with_data(tmp_path, [override])
    # Sources whose path the user must give (mixed data, the fine-tune recipes) or generate first (the
    # curriculum's clean set) get one.
    unset = [i for i, src in enumerate(OmegaConf.select(cfg, "data.sources") or [])
             if OmegaConf.is_missing(src, "path") or ("path" in src and src.path is None)
             or ("path" in src and not abs_path(src.path).exists())]
    cfg = _with_data(tmp_path, [override, *(f"data.sources.{i}.path={tmp_path / 't.jsonl'}" for i in unset)])
    check_config(cfg)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    assert model_cfg["kinds"] == list(cfg.data.kinds) and model_cfg["backbone"]["seed"] == cfg.seed
    assert model_cfg["region_kinds"] == list(cfg.data.get("region_kinds") or [])
    model = build_model(model_cfg, Charset.build(["abc 123"]))
    assert model.kinds == list(cfg.data.kinds)


def test_model_kinds_follow_the_data_and_an_override_of_them_is_refused(tmp_path):
    cfg = _with_data(tmp_path, ["data.kinds=[printed]", "data.region_kinds=[]", "seed=7"])
    assert list(cfg.model.kinds) == ["printed"] and cfg.model.backbone.seed == 7
    with pytest.raises(ConfigError, match=r"model\.kinds follows data\.kinds"):
        check_config(_with_data(tmp_path, ["model.kinds=[printed]"]))


@pytest.mark.parametrize("override,key", [
    ("model.backbone.p_min=0", "model.backbone.p_min"),
    ("model.backbone.p_min=1.2", "model.backbone.p_min"),
    ("data.batch_size=0", "data.batch_size"),
    ("optim.lr=-1", "optim.lr"),
    ("optim.lr=nan", "optim.lr must be a finite number"),  # nan passes every bound check: refused as such
    ("optim.weight_decay=inf", "optim.weight_decay must be a finite number"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("data.crop=[100,100]", "data.crop"),
    ("data.batch_size=2.5", "data.batch_size"),
    ("trainer.monitor_mode=up", "trainer.monitor_mode"),
    ("trainer.precise_bn_batches=-1", "trainer.precise_bn_batches"),
    ("data.max_line_height=0", "data.max_line_height"),
    ("data.read_scale=0", "data.read_scale"),
    ("data.read_scale=8", "data.read_scale"),
    ("trainer.max_epochs=0", "trainer.max_epochs"),
    ("trainer.max_steps=null", "trainer.max_epochs"),  # a schedule sized by epochs needs their count
])
def test_impossible_values_name_the_key(tmp_path, override, key):
    cfg = _with_data(tmp_path, [override])
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        check_config(cfg)


def test_missing_data_path_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"data\.path is required"):
        check_config(compose_cfg(["data=manifest"]))
    with pytest.raises(ConfigError, match=r"data\.path=.*nowhere.*no such file"):
        check_config(compose_cfg([f"data.path={tmp_path / 'nowhere'}"]))


def test_unknown_key_and_wrong_type_are_refused():
    with pytest.raises(ConfigCompositionException, match="p_minn"):
        compose_cfg(["model.backbone.p_minn=0.5"])
    cfg = compose_cfg(["data.batch_size=abc"])
    with pytest.raises(ConfigError, match=r"data\.batch_size must be an integer"):
        check_config(cfg)



@pytest.mark.parametrize(("cpus", "local_world", "expected"), [(2, 1, 1), (1, 1, 0), (64, 8, 7), (32, 1, 8)])
def test_auto_loader_workers_follow_the_cpus_per_process(monkeypatch, cpus, local_world, expected):
    import os

    from docrec.data.loading import loader_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(local_world))
    assert loader_workers("auto") == expected
    assert loader_workers(3) == 3


def test_auto_channels_last_holds_on_a_cpu_too_and_false_turns_it_off():
    from docrec.engine.runtime import setup
    assert setup("cpu", "auto", "auto").channels_last  # oneDNN gains too (README: 3.0 -> 2.4 s a step)
    assert not setup("cpu", "auto", False).channels_last
    assert setup("cpu", "auto", "auto").precision == "fp32"


def test_num_workers_takes_auto_or_a_count(tmp_path):
    check_config(_with_data(tmp_path, ["data.num_workers=auto"]))
    with pytest.raises(ConfigError, match="data.num_workers"):
        check_config(_with_data(tmp_path, ["data.num_workers=many"]))
