# Everything a new machine needs: `make train` and `make test` do all set-up themselves.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
SYNTH   := data/synthetic
PAGES   ?= 5000
TORCH   ?= torch==2.14.1 torchvision==0.29.1

.PHONY: setup train test data lint clean

setup: $(STAMP)

# torch is installed first and pinned here (the version on this machine's disk);
# pyproject.toml only asks for a range so a GPU machine can bring its own build.
$(STAMP): pyproject.toml
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -c "import torch, torchvision" 2>/dev/null || $(VPY) -m pip install -q $(TORCH)
	$(VPY) -m pip install -q -e ".[dev,export,plot]"
	touch $(STAMP)

$(SYNTH)/train.jsonl: | $(STAMP)
	$(VPY) scripts/make_synthetic.py --out $(SYNTH) --pages $(PAGES) --seed 0

data: $(SYNTH)/train.jsonl

train: setup data
	$(VPY) train.py $(ARGS)

test: setup
	$(VPY) -m pytest -q $(ARGS)

lint: setup
	$(VENV)/bin/ruff check src scripts tests examples train.py

clean:
	rm -rf outputs multirun .pytest_cache
