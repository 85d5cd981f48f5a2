"""Shared fixtures: composed configs, a tiny synthetic dataset, repo paths."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from docrec.engine.config import compose_train_config

REPO = Path(__file__).resolve().parents[1]


def load_script(path: str, name: str | None = None) -> ModuleType:
    """A script of the repo (``scripts/bench_decode.py``, ``examples/onnx_predict.py``) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name or Path(path).stem, REPO / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def compose_cfg(overrides: list[str] | None = None):
    """The training config as `python train.py OVERRIDES` would compose it."""
    return compose_train_config(overrides or [])


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


def make_toy_pages(out: Path, n_pages: int = 4, width: int = 320, height: int = 240, seed: int = 0) -> Path:
    """A tiny manifest dataset rendered with cv2.putText (fast, no fonts); returns the folder."""
    import random

    import cv2
    import numpy as np

    from docrec.formats import manifest
    from docrec.pages import Line, Page, Region

    rng = random.Random(seed)
    words = ["total", "date", "name", "paid", "12.50", "Paris", "invoice", "notes", "42", "form"]
    (out / "images").mkdir(parents=True, exist_ok=True)
    splits = {"train": [], "val": []}
    for i in range(n_pages):
        img = np.full((height, width, 3), 255, np.uint8)
        lines, regions = [], []
        y = 40
        for j in range(3):
            text = " ".join(rng.choice(words) for _ in range(2))
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.8, 2)
            x = rng.randint(10, max(11, width - tw - 10))
            cv2.putText(img, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (0, 0, 0), 2, cv2.LINE_AA)
            poly = [(x - 3, y - th - 4), (x + tw + 3, y - th - 4), (x + tw + 3, y + base + 2), (x - 3, y + base + 2)]
            kind = ["printed", "handwritten", "handwritten"][j % 3]
            region = None
            if j % 3 == 2:  # a handwritten value filled into a form field
                region = f"r{j}"
                box = [(x - 8, y - th - 9), (x + tw + 8, y - th - 9), (x + tw + 8, y + base + 7), (x - 8, y + base + 7)]
                regions.append(Region(id=region, polygon=box, kind="form_field"))
            lines.append(Line(id=f"l{j}", polygon=poly, text=text, kind=kind, region=region))
            y += 60
        name = f"images/{i:03d}.png"
        cv2.imwrite(str(out / name), img)
        page = Page(image=name, width=width, height=height, regions=regions, lines=lines, root=out)
        splits["val" if i % 4 == 3 else "train"].append(page)
    for split, pages in splits.items():
        manifest.write(pages, out / f"{split}.jsonl")
    return out


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Path:
    return make_toy_pages(tmp_path_factory.mktemp("toy"), n_pages=8)
