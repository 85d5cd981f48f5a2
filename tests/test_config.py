"""Config errors fail at start-up with a message naming the key."""

import pytest
from hydra.errors import ConfigCompositionException

from docrec.engine.config import ConfigError, check_config
from tests.conftest import compose_cfg


def _with_data(tmp_path, overrides):
    (tmp_path / "t.jsonl").write_text("")
    return compose_cfg([f"data.path={tmp_path / 't.jsonl'}", "data.val_path=null", *overrides])


def test_every_config_group_composes():
    for ov in (["experiment=smoke"], ["experiment=funsd", "data.path=x"], ["experiment=handwriting", "data.path=x"],
               ["augment=none"], ["augment=handwriting"], ["data=alto", "data.path=x"], ["data=sroie", "data.path=x"],
               ["data=manifest", "data.path=x"]):
        cfg = compose_cfg(ov)
        assert cfg.model.backbone.p_min > 0


@pytest.mark.parametrize("override,key", [
    ("model.backbone.p_min=0", "model.backbone.p_min"),
    ("model.backbone.p_min=1.2", "model.backbone.p_min"),
    ("data.batch_size=0", "data.batch_size"),
    ("optim.lr=-1", "optim.lr"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("data.crop=[100,100]", "data.crop"),
    ("data.batch_size=2.5", "data.batch_size"),
    ("trainer.monitor_mode=up", "trainer.monitor_mode"),
    ("trainer.precise_bn_batches=-1", "trainer.precise_bn_batches"),
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

    from docrec.engine.runtime import loader_workers
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
