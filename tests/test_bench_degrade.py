"""scripts/bench_degrade.py: its contenders per page kind, its table, and a clear stop without augraphy."""

from __future__ import annotations

import sys

import pytest

from docrec.synth import degrade
from tests.conftest import load_script


def _bench():
    return load_script("scripts/bench_degrade.py")


def test_contenders_are_every_process_of_the_kind_on_both_sides():
    bench = _bench()
    assert bench.contenders("receipt") == ["docrec photocopy", "docrec scan", "docrec thermal",
                                          "augraphy photocopy", "augraphy scan", "augraphy thermal",
                                          "augraphy default"]
    assert set(bench.AUGRAPHY) == set(degrade.PROCESSES)  # a recipe for each of our processes


def test_table_gives_each_augraphy_process_against_ours():
    bench = _bench()
    ms = {"draw": 300.0, "docrec fax": 40.0, "augraphy fax": 600.0, "augraphy default": 9000.0, "cache": 90.0}
    table = bench.table({"form": {k: {"median_ms": v, "mean_ms": v + 1, "pages": 3} for k, v in ms.items()}})
    rows = table.splitlines()
    assert "| form | drawing (layout, text, ink) | 300 | 301 |  |" in rows
    assert "| form | augraphy fax | 600 | 601 | 15.0 |" in rows  # 15x our fax
    assert "| form | augraphy default | 9000 | 9001 |  |" in rows  # no process of ours to compare with
    assert "| form | augraphy's input cache (PNG write) | 90 | 91 |  |" in rows


def test_without_augraphy_it_says_how_to_install_it(monkeypatch):
    bench = _bench()
    monkeypatch.setitem(sys.modules, "augraphy", None)  # import fails
    with pytest.raises(SystemExit, match="augraphy is not installed"):
        bench.augraphy_pipeline("fax")
