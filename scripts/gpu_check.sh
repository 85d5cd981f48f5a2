#!/bin/bash
# GPU check on a lent H100/H200 machine: CUDA tests, both benchmarks, a short real training.
#
# The machine has Python 3.12 with torch, torchvision, timm, tensorboard and OpenCV but no
# network. First, HERE (with network), gather the wheels it lacks into .whl/ (git-ignored):
#
#   ../shared/tools/gpu_wheels.sh .whl hydra-core==1.3.8 omegaconf==2.3.1 antlr4-python3-runtime==4.9.3 \
#       albumentations==2.0.8 albucore==0.0.24 simsimd==6.5.16 stringzilla==5.3.2 pydantic==2.14.4 \
#       pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 typing_extensions==4.16.0 \
#       faker==40.63.0 rapidfuzz==3.14.6 shapely==2.2.0 defusedxml==0.7.1 scipy==1.17.1 PyYAML==6.0.4 \
#       packaging==26.4 tqdm==4.70.1 pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.19.2
#
# (52 MB; the versions of .venv here. albumentations needs albucore, pydantic, PyYAML, scipy and
# OpenCV; albucore needs simsimd and stringzilla; pydantic needs pydantic-core, annotated-types,
# typing-inspection and typing_extensions >= 4.14; hydra-core needs omegaconf, antlr4 4.9.3 and
# packaging; pytest needs pluggy, iniconfig, pygments. numpy, OpenCV, Pillow, tensorboard come
# with the machine; scipy and PyYAML wheels are skipped there when it has its own.) Then run it
# on the device, carrying .whl:  bash scripts/gpu_check.sh   (device tool: carry=[".whl"], timeout_s=600).
# Env overrides: OUT (default /tmp/gpu_check_out), PY, GPU_CHECK_BUDGET, GPU_CHECK_PAGES, GPU_CHECK_WORKERS.
#
# Sections, each time-boxed with `timeout` and logged to $OUT/logs/<section>.log:
#   env               nvidia-smi, versions, wheel install into /tmp/site, import check
#   generate          400 synthetic pages with 16 workers (in the background, into /tmp; not sent back)
#   pytest_gpu        pytest -m gpu (tests/test_gpu.py)
#   bench_loader      scripts/bench_loader.py --workers 1 8 on the generated pages
#   bench_loader_cached   the same pages read back from the page cache (data.cache_dir), 1 worker
#   bench_train_step  scripts/bench_train_step.py --device cuda --res 1024 --batch 16 (eager variants)
#   bench_memory      scripts/bench_train_step.py --device cuda --memory
#   train             python train.py on the generated pages, steps sized to the time left; final metrics
#   bench_train_step_compiled   baseline, docrec_p0.8, docrec_p0.8_compiled (last: compilation is slow)
# $OUT/summary.txt has one line per section and the result tables. The whole run keeps within
# GPU_CHECK_BUDGET seconds (default 540, under the device's 600 s per command); a section that
# would not fit is skipped, said so. Typical: env 15 s, tests 60-90 s, loader 15 s, eager benchmark
# 60 s, memory 40 s, training 2-4 min, compiled benchmark ~2 min (compilation).
# Without CUDA (e.g. on a CPU machine) only env, pytest_gpu (all skipped) and the loader run.
set -u

cd "$(dirname "$0")/.."
REPO=$PWD
OUT=${OUT:-/tmp/gpu_check_out}
LOGS=$OUT/logs
PY=${PY:-python3}
BUDGET=${GPU_CHECK_BUDGET:-540}
DATA=${GPU_CHECK_DATA:-/tmp/docrec_gpu_synth}
RUN=/tmp/docrec_gpu_run
PAGES=${GPU_CHECK_PAGES:-400}      # synthetic pages to generate (smaller for a dry run on a CPU machine)
WORKERS=${GPU_CHECK_WORKERS:-8}    # loader workers (benchmark and training); generation uses 2x
mkdir -p "$LOGS"
: > "$OUT/summary.txt"
T0=$(date +%s)

note() { echo "$*" | tee -a "$OUT/summary.txt"; }
left() { echo $(( BUDGET - ($(date +%s) - T0) )); }

# section NAME MAX_SECONDS CMD...: run CMD with a time limit, log to $LOGS/NAME.log, report the outcome.
section() {
  local name=$1 limit=$2 rem rc t
  shift 2
  rem=$(left)
  if (( rem < 30 )); then note "SKIP $name: only ${rem}s of the budget left"; return 99; fi
  (( limit > rem - 15 )) && limit=$(( rem - 15 ))
  t=$(date +%s)
  echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S): $*" > "$LOGS/$name.log"
  echo "=== $name (limit ${limit}s)"
  timeout -k 10 "$limit" "$@" >> "$LOGS/$name.log" 2>&1
  rc=$?
  t=$(( $(date +%s) - t ))
  if (( rc == 0 )); then note "OK   $name (${t}s)"
  elif (( rc == 124 || rc == 137 )); then note "TIME $name: stopped at its ${limit}s limit (logs/$name.log)"
  else note "FAIL $name: exit $rc after ${t}s (logs/$name.log)"; fi
  tail -n 30 "$LOGS/$name.log"
  return $rc
}

# ---- env: versions, wheels, imports -------------------------------------------------------------
{
  date -u
  nvidia-smi || echo "nvidia-smi: not available"
  $PY --version
  nproc; free -g
  $PY -c "import torch, torchvision, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), '| torchvision', torchvision.__version__, '| timm', timm.__version__)"
} > "$LOGS/env.log" 2>&1
PYVER=$($PY -c "import sys; print(f'{sys.version_info[0]}.{sys.version_info[1]}')")
if ls .whl/*.whl > /dev/null 2>&1 && [ "$PYVER" != "3.12" ]; then
  echo "Python $PYVER: the .whl/ wheels are for 3.12, not installed; using the installed packages" >> "$LOGS/env.log"
  export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
elif ls .whl/*.whl > /dev/null 2>&1; then
  # A package the machine already has is kept where its wheel is a heavy compiled one (numpy ABI).
  wheels=()
  for w in .whl/*.whl; do
    case $(basename "$w") in
      scipy-*) $PY -c "import scipy" 2>/dev/null && { echo "keeping the machine's scipy" >> "$LOGS/env.log"; continue; } ;;
      [Pp]y[Yy][Aa][Mm][Ll]-*) $PY -c "import yaml" 2>/dev/null && { echo "keeping the machine's PyYAML" >> "$LOGS/env.log"; continue; } ;;
    esac
    wheels+=("$w")
  done
  if $PY -m pip install -q --no-index --no-deps --upgrade --target /tmp/site "${wheels[@]}" >> "$LOGS/env.log" 2>&1; then
    echo "installed ${#wheels[@]} wheels into /tmp/site" >> "$LOGS/env.log"
  else
    note "FAIL env: pip install of .whl/ failed (logs/env.log)"
  fi
  export PYTHONPATH=/tmp/site:$REPO/src${PYTHONPATH:+:$PYTHONPATH}
else
  echo "no .whl/ here: using the installed packages" >> "$LOGS/env.log"
  export PYTHONPATH=$REPO/src${PYTHONPATH:+:$PYTHONPATH}
fi
if $PY - >> "$LOGS/env.log" 2>&1 <<'EOF'
import importlib
missing = []
for mod in ("hydra", "omegaconf", "albumentations", "cv2", "timm", "tensorboard", "scipy", "shapely",
            "rapidfuzz", "faker", "defusedxml", "pytest", "tqdm", "PIL", "docrec.engine.trainer"):
    try:
        importlib.import_module(mod)
    except Exception as exc:
        missing.append(f"{mod} ({type(exc).__name__}: {exc})")
print("imports:", "all fine" if not missing else "MISSING " + "; ".join(missing))
raise SystemExit(1 if missing else 0)
EOF
then note "OK   env ($(( $(date +%s) - T0 ))s)"
else
  note "FAIL env: imports missing (logs/env.log); nothing else can run"
  tail -n 20 "$LOGS/env.log"
  exit 1
fi
tail -n 12 "$LOGS/env.log"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))" 2>/dev/null || echo 0)
(( CUDA )) || note "NOTE no CUDA device: the GPU sections are skipped"

# ---- generate pages in the background while the tests run ---------------------------------------
rm -rf "$DATA"
( timeout -k 10 150 $PY scripts/make_synthetic.py --out "$DATA" --pages "$PAGES" --seed 0 --workers $(( 2 * WORKERS )) \
    > "$LOGS/generate.log" 2>&1; echo "exit $?" >> "$LOGS/generate.log" ) &
GEN=$!

# ---- tests ---------------------------------------------------------------------------------------
section pytest_gpu 130 $PY -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py

# ---- loader benchmark (needs the pages) ---------------------------------------------------------
wait $GEN
if grep -q "^exit 0" "$LOGS/generate.log" && [ -f "$DATA/train.jsonl" ]; then
  note "OK   generate: $(grep -o '[0-9]* pages in [0-9.]* s ([0-9.]* pages/s)' "$LOGS/generate.log" | head -1)"
  MANIFEST=(--manifest "$DATA/train.jsonl")
else
  note "FAIL generate (logs/generate.log): the loader benchmark makes its own pages, no training"
  MANIFEST=()
fi
section bench_loader 60 $PY scripts/bench_loader.py ${MANIFEST[@]+"${MANIFEST[@]}"} --pages 96 --long-side 1024 \
  --workers 1 "$WORKERS" --step-ms 250 --json "$OUT/bench_loader.json"
section bench_loader_cached 40 $PY scripts/bench_loader.py ${MANIFEST[@]+"${MANIFEST[@]}"} --pages 96 --long-side 1024 \
  --workers 1 --cache --json "$OUT/bench_loader_cached.json"

# ---- training-step benchmark (eager variants) and memory ----------------------------------------
if (( CUDA )); then
  section bench_train_step 110 $PY scripts/bench_train_step.py --device cuda --res 1024 --batch 16 \
    --steps 10 --warmup 3 --variants baseline droppath_p0.8 docrec_p1.0 docrec_p0.8 docrec_p0.5 \
    --json "$OUT/bench_train_step.json"
  section bench_memory 90 $PY scripts/bench_train_step.py --device cuda --memory --json "$OUT/bench_memory.json"
fi

# ---- a short real training ----------------------------------------------------------------------
COMPILED_RESERVE=150  # the compiled benchmark runs last, in the time kept back here
if (( CUDA )) && [ -f "$DATA/train.jsonl" ]; then
  rem=$(left)
  train_s=$(( rem - 75 - COMPILED_RESERVE ))  # start-up, two validations and the end are on top of the steps
  (( train_s > 240 )) && train_s=240
  if (( train_s < 45 )); then
    note "SKIP train: only ${rem}s of the budget left"
  else
    # Steps from the measured throughput: pages/s of docrec_p0.8 at 1024x1024, scaled to the
    # default 2048-pixel A4 page (2.8x the pixels), halved for data, EMA, logging and cuDNN tuning.
    STEPS=$($PY - "$OUT/bench_train_step.json" "$train_s" <<'EOF' 2>/dev/null || echo 200
import json, sys
try:
    rows = json.load(open(sys.argv[1]))["rows"]
    pps = next(r["pages_per_s"] for r in rows if r["variant"] == "docrec_p0.8" and r["pages_per_s"])
except Exception:
    pps = 40.0
steps = int(float(sys.argv[2]) * pps / 2.8 * 0.5 / 4)
print(max(50, min(steps, 5000)))
EOF
)
    note "train: ${STEPS} steps planned for ~${train_s}s of training"
    rm -rf "$RUN"
    section train $(( train_s + 75 )) $PY train.py trainer.max_steps="$STEPS" \
      trainer.val_every=$(( STEPS / 2 )) trainer.ckpt_every=$(( STEPS / 2 )) trainer.log_every=10 \
      data.path="$DATA/train.jsonl" data.val_path="$DATA/val.jsonl" data.num_workers="$WORKERS" data.max_val_pages=8 \
      model.postprocess.max_lines=100 \
      hydra.run.dir="$RUN"
    note "train: last progress: $(tr '\r' '\n' < "$LOGS/train.log" | grep -E '^train' | tail -n 1)"
    grep -E "^docrec \||^  (final|best|data|model) |validation:|Error|error" "$LOGS/train.log" | tail -n 14 \
      | tee -a "$OUT/summary.txt"
    # Everything but the checkpoints (hundreds of MB) comes back: config, log, TensorBoard events.
    mkdir -p "$OUT/run" && (cd "$RUN" 2>/dev/null && find . -path ./checkpoints -prune -o -type f -print \
      | while read -r f; do mkdir -p "$OUT/run/$(dirname "$f")"; cp "$f" "$OUT/run/$f"; done)
  fi
fi

# ---- compiled variant (regional torch.compile: minutes of compilation) ---------------------------
if (( CUDA )); then
  section bench_train_step_compiled "$COMPILED_RESERVE" $PY scripts/bench_train_step.py --device cuda --res 1024 \
    --batch 16 --steps 10 --warmup 3 --variants baseline docrec_p0.8 docrec_p0.8_compiled \
    --json "$OUT/bench_train_step_compiled.json"
fi

# ---- summary -------------------------------------------------------------------------------------
{
  echo
  for f in bench_loader bench_loader_cached bench_train_step bench_memory bench_train_step_compiled; do
    [ -f "$LOGS/$f.log" ] && { echo "--- $f"; grep -v -E "^(  round|  res [0-9]+ batch)" "$LOGS/$f.log" | tail -n 22; }
  done
  echo "total $(( $(date +%s) - T0 ))s of ${BUDGET}s"
} >> "$OUT/summary.txt"
echo; echo "===== summary ($OUT/summary.txt)"; cat "$OUT/summary.txt"
