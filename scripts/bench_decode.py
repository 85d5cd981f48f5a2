"""Greedy attention decoding speed: the cached incremental decoder against recomputing the prefix.

    python scripts/bench_decode.py [--chars 60] [--lines 1 16 64] [--threads 2] [--repeats 3] [--json PATH]

The recognition head is the default model's (configs/model/default.yaml: d_model 256, 3 decoder
layers, random weights) in eval mode, float32, on the CPU. Each line's memory is random with
``--chars`` x 2.5 columns (a printed character spans ~2.5 fused-map columns). The EOS logit is
pushed down so every line decodes exactly ``--chars`` characters in both paths.

- ``prefix``: the decoder before the key/value cache: at each character the whole prefix goes
  through every layer again (:func:`greedy_by_prefix`, kept here as the reference).
- ``cached``: :meth:`RecognitionHead.greedy` (cross-attention keys/values once per line,
  self-attention keys/values appended per character, finished lines leave the batch).

Both must give the same ids (checked); the table gives ms per line and the speed-up.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from docrec.models.recognition import RecognitionHead

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def greedy_by_prefix(head: RecognitionHead, memory: torch.Tensor, padding: torch.Tensor,
                     max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy decoding as before the cache: :meth:`RecognitionHead.decode` on the whole prefix per step."""
    max_len = min(max_len or head.max_len, head.max_len)
    n = memory.shape[0]
    columns = (~padding).sum(1)
    ys = torch.full((n, 1), head.bos_id, dtype=torch.long)
    logp_sum, steps = torch.zeros(n), torch.zeros(n)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(max_len - 1):
        if n == 0 or bool(done.all()):
            break
        logits = head.decode(memory, padding, ys)[:, -1].float()
        logits[:, [head.pad_id, head.bos_id]] = float("-inf")
        best, nxt = logits.log_softmax(-1).max(-1)
        nxt = nxt.masked_fill(done, head.pad_id)
        logp_sum += best.masked_fill(done, 0.0)
        steps += (~done).float()
        ys = torch.cat([ys, nxt[:, None]], dim=1)
        done |= (nxt == head.eos_id) | (steps > columns)
    return ys, torch.exp(logp_sum / steps.clamp(min=1.0))


def build_head(vocab: int = 100) -> RecognitionHead:
    rec = dict(OmegaConf.to_container(OmegaConf.load(REPO / "configs/model/default.yaml"))["recognition"])
    for k in ("max_lines_per_batch", "quad_jitter", "quad_grow", "reads_per_line"):
        rec.pop(k, None)
    return RecognitionHead(256, vocab, pad_id=0, bos_id=1, eos_id=2, **rec).eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--chars", type=int, default=60, help="characters decoded per line")
    ap.add_argument("--lines", type=int, nargs="+", default=[1, 16, 64], help="lines decoded together")
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per setting (the median is reported)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    head = build_head()
    with torch.no_grad():
        head.classifier.bias[head.eos_id] = -1e4  # every line reads exactly --chars characters
    width = min(head.roi_max_width, int(args.chars * 2.5) + 1)
    rows = []
    print(f"greedy decoding of {args.chars}-character lines, d_model {head.classifier.in_features}, "
          f"{len(head.decoder.layers)} decoder layers, {width} memory columns, {args.threads} threads (CPU)")
    print(f"{'lines':>6} {'prefix ms/line':>15} {'cached ms/line':>15} {'speed-up':>9}")
    for n in args.lines:
        memory = torch.randn(n, width, head.classifier.in_features)
        padding = torch.zeros(n, width, dtype=torch.bool)
        times = {}
        with torch.no_grad():
            ref = greedy_by_prefix(head, memory, padding, args.chars + 1)[0]
            got = head.greedy(memory, padding, args.chars + 1)[0]
            if not torch.equal(ref, got):
                raise SystemExit("cached and prefix decoding disagree")
            for name, fn in (("prefix", greedy_by_prefix), ("cached", RecognitionHead.greedy)):
                runs = []
                for _ in range(args.repeats):
                    t0 = time.perf_counter()
                    fn(head, memory, padding, args.chars + 1)
                    runs.append((time.perf_counter() - t0) * 1e3 / n)
                times[name] = statistics.median(runs)
        rows.append({"lines": n, "chars": args.chars, "prefix_ms_per_line": times["prefix"],
                     "cached_ms_per_line": times["cached"], "speedup": times["prefix"] / times["cached"]})
        print(f"{n:>6} {times['prefix']:>15.2f} {times['cached']:>15.2f} {rows[-1]['speedup']:>8.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
