# Two commands do all the set-up on a fresh machine:
#   make repro   install (pinned, from uv.lock) and run the whole pipeline (`dvc repro`); prints the MLflow link
#   make test    install the same plus the remote tests' extras (dvc-s3, moto) and run the test suite (.ci/run)
#   make study   the default regime study on the demo (configs/study.yaml), timed into reports/bench_study.md
#   make doctor  is everything params.yaml needs in place (data, weights, describer, GPU, disk, MLflow, DVC remote)?
# The only prerequisite is python3 (>= 3.10) with pip; uv is bootstrapped from PyPI if missing.

UV_VERSION := 0.13.8
VENV := .venv
BIN := $(VENV)/bin
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: setup setup-test repro test test-fast bench bench-repro study study-reduced lint mlflow-init doctor

setup: $(VENV)/.synced

# --compile-bytecode: every stage is a fresh Python process importing torch, open_clip and MLflow; without .pyc
# files (uv writes none by default, and PYTHONDONTWRITEBYTECODE=1 forbids caching them) each process compiles
# ~2,000 modules again, measured at 10-14 s of a train stage's 35 s on 2 cores.
$(VENV)/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q "uv==$(UV_VERSION)"
	$(UV) sync --frozen --compile-bytecode
	@touch $@

# The S3 remote test needs dvc-s3 (the `s3` extra, for users of an S3 remote too) and moto's S3 server (the
# `s3-test` group); `make repro` goes without them. After a plain re-sync (newer .synced) this re-syncs.
setup-test: $(VENV)/.synced-test

$(VENV)/.synced-test: $(VENV)/.synced
	$(UV) sync --frozen --compile-bytecode --extra s3 --group s3-test
	@touch $@

mlflow-init: setup
	python -m lmmreg.tracking init

repro: mlflow-init
	dvc repro
	@python -m lmmreg.tracking link

test: setup-test
	python -m pytest -q --durations=25

test-fast: setup
	python -m pytest -q -m "not slow"

bench: setup
	python benchmarks/bench_clip.py --cpu-epoch-images 16
	python benchmarks/bench_describe_openai.py
	python benchmarks/bench_pretrain.py
	python benchmarks/bench_repro.py
	python benchmarks/bench_live_logging.py

# From a clean clone: make repro with per-stage seconds, dvc exp run -S alpha=0.1, a 4-point queued sweep at -j 2.
bench-repro: setup
	python benchmarks/bench_repro.py

# Every point of configs/study.yaml as a queued DVC experiment, STUDY_JOBS at a time (they share the cores), then the
# report (its regime study section and reports/study/). Measured on 2 cores after make repro: 24.5 min queued at 2
# for 52 points and 17 methods (the code before it: 27.5 min the same session; reports/bench_study.md);
# STUDY_JOBS=1 runs one `dvc exp run` after another (43.9 min for the 36-point grid of an earlier round).
STUDY_JOBS ?= 2
study: setup
	python benchmarks/bench_study.py --jobs $(STUDY_JOBS)

study-reduced: setup
	python benchmarks/bench_study.py --reduced

# Seconds, before any GPU time: a table of what is ready and what is not, each with its fix; fails if anything is missing.
doctor: setup
	python -m lmmreg doctor

lint: setup
	ruff check src tests benchmarks
