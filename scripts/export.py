"""Export a checkpoint to ONNX for inference without the training code (onnxruntime + NumPy + OpenCV).

    python scripts/export.py --checkpoint outputs/.../checkpoints/best.pt --output exported/
    python examples/onnx_predict.py exported/ page.png

Writes segmentation.onnx, encoder.onnx, decoder_step.onnx, charset.json and export.json
(see ``docrec.export`` for what each graph takes and returns, and where Python takes over).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from docrec.export import DEFAULT_OPSET, export_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line arguments."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path, required=True,
                    help="a .pt checkpoint or a run dir (its checkpoints/best.pt, else last.pt)")
    ap.add_argument("--output", type=Path, required=True, help="folder for the ONNX files and their metadata")
    ap.add_argument("--weights", choices=("ema", "raw"), default="ema", help="which weights (default ema)")
    ap.add_argument("--long-side", type=int, default=None,
                    help="page long side recorded for pre-processing (default: the checkpoint's reading long side, "
                         "data.long_side x data.read_scale)")
    ap.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset, 17 or later (default {DEFAULT_OPSET})")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Export, print what was written, return the exit code."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("docrec").setLevel(logging.INFO)  # the exporter's own INFO lines are hundreds
    start = time.perf_counter()
    meta = export_checkpoint(args.checkpoint, args.output, args.weights, args.long_side, args.opset)
    files = [args.output / f for f in meta["files"].values()]
    size = sum(f.stat().st_size for f in files)
    print(f"docrec export | {args.checkpoint} ({args.weights} weights) -> {args.output}: "
          f"{', '.join(f.name for f in files)} + export.json, {size / 1e6:.1f} MB, opset {meta['opset']}, "
          f"long side {meta['long_side']}, {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
