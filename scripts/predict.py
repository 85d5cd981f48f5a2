"""Read new pages: PAGE-XML 2019, ALTO 4.4, a manifest record and an overlay PNG per image.

    python scripts/predict.py checkpoint=outputs/.../checkpoints/best.pt input=scans/ output=predictions/
    python scripts/predict.py ... 'format=[page,alto]'

The output folder mirrors the input folder (``scans/a/001.png`` -> ``predictions/a/001.xml``).
Files are named after the image's stem; images of one folder that share a stem (``x.png`` and
``x.tif``) keep their extension in the name (``x.png.xml``). The image reference in every
written file is relative to that file (``absolute_paths=true`` for absolute ones). Nothing is
written when an output would replace an input file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader
from tqdm import tqdm

from docrec import __version__
from docrec.data.dataset import pad_images, to_model_input
from docrec.data.loading import loader_workers, worker_dies_with
from docrec.engine.config import ConfigError, abs_path
from docrec.engine.runtime import setup
from docrec.engine.tb import draw_lines
from docrec.formats import alto, manifest, mirrored_names, pagexml, relative_image
from docrec.images import read_image
from docrec.inference import (
    ImageFolder,
    find_images,
    line_scaled_long_sides,
    load_model,
    reading_long_side_of,
    reading_max_line_height,
    to_page,
)

#: What predict can write per page, and the suffix of each file.
FORMATS = {"page": ".xml", "alto": ".alto.xml", "json": ".json", "overlay": ".overlay.png"}


def output_paths(images: list[Path], input_root: Path, out: Path, formats: list[str]) -> list[dict[str, Path]]:
    """Per image, the file each format is written to: the input tree mirrored under ``out``.

    Raises ConfigError (writing nothing) when an output would be an input image.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ConfigError(f"format must list some of {', '.join(FORMATS)}; got {list(formats)}")
    names = mirrored_names(images, input_root if input_root.is_dir() else input_root.parent)
    plans = [{f: out / name.with_name(name.name + FORMATS[f]) for f in formats} for name in names]
    inputs = {p.resolve() for p in images}
    clash = sorted(str(p) for plan in plans for p in plan.values() if p.resolve() in inputs)
    if clash:
        raise ConfigError(f"output={out}: would overwrite input image(s) {', '.join(clash[:3])}; "
                          "choose another output folder")
    return plans


def _collate(batch):
    images, metas = zip(*batch)
    return pad_images(images), list(metas)


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    rt = setup(cfg.device, cfg.precision, "auto")
    checkpoint = abs_path(cfg.checkpoint)
    formats = list(cfg.format)
    input_root = abs_path(cfg.input)
    paths = find_images(input_root)
    out = abs_path(cfg.output)
    plans = output_paths(paths, input_root, out, formats)
    model, _, train_cfg = load_model(checkpoint, cfg.weights, rt.device, cfg.decoder,
                                     OmegaConf.to_container(cfg.postprocess), cfg.blank_penalty,
                                     cfg.read_shifts, cfg.ctc_beam, cfg.rescore)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    long_side = reading_long_side_of(cfg.long_side, train_cfg)

    def images_loader(long_sides=None) -> DataLoader:
        return DataLoader(ImageFolder(paths, long_side, long_sides=long_sides), batch_size=cfg.batch_size,
                          num_workers=loader_workers(cfg.num_workers), collate_fn=_collate,
                          worker_init_fn=worker_dies_with(os.getpid()))

    loader = images_loader()
    # max_line_height: a first pass finds each page's lines; pages with taller lines are read smaller.
    max_line_height = reading_max_line_height(cfg.max_line_height, train_cfg)
    sides = line_scaled_long_sides(model, loader, rt, long_side, max_line_height)
    if sides:
        loader = images_loader(sides)
    n_lines, done = 0, 0
    with torch.no_grad(), tqdm(total=len(paths), desc="predict", disable=len(paths) < 2) as bar:
        for images, metas in loader:
            x, _ = to_model_input(images, None, rt.device, rt.channels_last)
            with rt.autocast():
                preds = model(x)
            for pred, meta in zip(preds, metas):
                plan = plans[done]
                done += 1
                rgb = read_image(Path(meta["path"]))
                page = to_page(pred, meta, gray=cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
                write_page(page, plan, rgb, cfg.absolute_paths, str(checkpoint))
                n_lines += len(page.lines)
                bar.update(1)
    smaller = f", {len(sides)} read smaller (max_line_height={max_line_height})" if sides else ""
    print(f"docrec predict | {len(paths)} page(s){smaller}, {n_lines} lines -> {out} (long side {long_side})")


def write_page(page, plan: dict[str, Path], rgb, absolute: bool, checkpoint: str) -> None:
    """Write the formats of ``plan`` for one predicted page."""
    def image_ref(path: Path) -> str:
        return page.image_path.resolve().as_posix() if absolute else relative_image(page, path.parent)

    if "page" in plan:
        pagexml.write(page, plan["page"], image_name=image_ref(plan["page"]), checkpoint=checkpoint)
    if "alto" in plan:
        alto.write(page, plan["alto"], image_name=image_ref(plan["alto"]), creator_version=__version__,
                   checkpoint=checkpoint)
    if "json" in plan:
        rec = manifest.page_to_dict(page, image=image_ref(plan["json"]))
        plan["json"].parent.mkdir(parents=True, exist_ok=True)
        plan["json"].write_text(json.dumps(rec, ensure_ascii=False, indent=1), encoding="utf-8")
    if "overlay" in plan:
        lines = [{"polygon": ln.polygon, "text": ln.text, "kind": ln.kind} for ln in page.lines]
        plan["overlay"].parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(plan["overlay"]), cv2.cvtColor(draw_lines(rgb, lines), cv2.COLOR_RGB2BGR))


if __name__ == "__main__":
    main()
