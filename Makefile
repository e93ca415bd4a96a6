# The two commands of the README's quick start: `make demo` and `make test`; `make lint` runs ruff.
# Both create .venv (Python 3.11+) and install the package with its test extras on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
WORKDIR ?= runs/demo

.PHONY: demo test lint setup browser clean bench bench-quick

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --upgrade pip
	$(VENV)/bin/pip install -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

# Headless Chromium for the review page's browser test (Debian's package; never `playwright install`).
browser:
	@bash scripts/ensure_chromium.sh

# Paper B: a short stage 1 (the RetinaNet detector trained on the synthetic cervix box, configs/retinanet.py:demo),
# then the P3+P6+P7 pyramid head on its frozen backbone; then paper A's patch model; on the synthetic demo
# data (~6 min on 2 CPUs). Stage 1 takes 3.5 min on 2 idle cores (train 156 s + eval 54 s wall, measured);
# its smaller backbone saves most of that in the pyramid step (118 vs 434 CPU-s on the random ResNet50-FPN).
demo: $(STAMP)
	$(PY) launch.py train --config configs/retinanet.py:demo --workdir $(WORKDIR)_stage1
	$(PY) launch.py eval --config configs/retinanet.py:demo --workdir $(WORKDIR)_stage1
	$(PY) launch.py demo --config configs/demo.py --workdir $(WORKDIR) \
		--config.model.backbone_checkpoint=$(WORKDIR)_stage1
	$(PY) launch.py demo --config configs/demo.py:patch --workdir $(WORKDIR)_patch
	$(PY) -m cervix_jax.train.demo_report $(WORKDIR)_stage1 $(WORKDIR) $(WORKDIR)_patch

test: $(STAMP) browser
	bash scripts/run_tests.sh $(PY)

# Every benchmark in one command (benchmarks/suite.py; docs/performance.md). `make bench` is the full,
# accelerator-sized run (<= 8 min on one H100/H200); `make bench-quick` (or `make bench ARGS=--quick`)
# the CPU-sized one (< 5 min on 2 cores). Results: benchmarks/results/<device>-<mode>-<date>.{json,md}.
BENCH_MODE := $(if $(filter --quick,$(ARGS)),quick,full)
bench: $(STAMP)
	$(PY) benchmarks/suite.py --mode $(BENCH_MODE) $(filter-out --quick,$(ARGS))

bench-quick: $(STAMP)
	$(PY) benchmarks/suite.py --mode quick $(ARGS)

# Style check (pyproject.toml's [tool.ruff]: line length 110, pycodestyle E and pyflakes F rules).
lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs
