"""Read new pages: PAGE-XML 2019, a manifest record and an overlay PNG per image.

    python scripts/predict.py checkpoint=outputs/.../checkpoints/best.pt input=scans/ output=predictions/
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import hydra
import torch
from omegaconf import DictConfig
from torch.utils.data import DataLoader
from tqdm import tqdm

from docrec.data.dataset import normalize, pad_images
from docrec.engine.config import abs_path
from docrec.engine.inference import ImageFolder, find_images, load_model, to_page
from docrec.engine.runtime import setup
from docrec.engine.tb import draw_lines
from docrec.formats import manifest, pagexml
from docrec.images import read_image


def _collate(batch):
    images, metas = zip(*batch)
    return pad_images(images), list(metas)


@hydra.main(version_base="1.3", config_path="../configs", config_name="predict")
def main(cfg: DictConfig) -> None:
    rt = setup(cfg.device, cfg.precision, "auto")
    model, _, train_cfg = load_model(abs_path(cfg.checkpoint), cfg.weights, rt.device, cfg.decoder)
    if rt.channels_last:
        model = model.to(memory_format=torch.channels_last)
    paths = find_images(abs_path(cfg.input))
    out = abs_path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    ds = ImageFolder(paths, cfg.long_side or train_cfg["data"]["long_side"])
    loader = DataLoader(ds, batch_size=cfg.batch_size, num_workers=cfg.num_workers, collate_fn=_collate)
    n_lines = 0
    with torch.no_grad(), tqdm(total=len(paths), desc="predict", disable=len(paths) < 2) as bar:
        for images, metas in loader:
            x = normalize(images.to(rt.device))
            if rt.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with rt.autocast():
                preds = model(x)
            for pred, meta in zip(preds, metas):
                page, conf = to_page(pred, meta)
                stem = out / Path(meta["path"]).stem
                pagexml.write(page, stem.with_suffix(".xml"), image_name=page.image_path.resolve().as_posix(),
                              confidences={ln.id: c for ln, c in zip(page.lines, conf)})
                rec = manifest.page_to_dict(page, image=page.image_path.resolve().as_posix())
                for line, c in zip(rec["lines"], conf):
                    line["confidence"] = round(c, 4)
                stem.with_suffix(".json").write_text(json.dumps(rec, ensure_ascii=False, indent=1))
                if cfg.overlay:
                    img = read_image(page.image_path)
                    lines = [{"polygon": ln.polygon, "text": ln.text, "kind": ln.kind} for ln in page.lines]
                    drawn = draw_lines(img, lines)
                    cv2.imwrite(str(stem.with_suffix(".png")), cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                n_lines += len(page.lines)
                bar.update(1)
    print(f"docrec predict | {len(paths)} page(s), {n_lines} lines -> {out}")


if __name__ == "__main__":
    main()
