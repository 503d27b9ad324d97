# PostBC robot stack. `make demo` = set up + run the main job on the embedded default;
# `make test` = set up + run the test suite (what CI runs).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Everything CI installs is pinned in requirements/ci.txt (torch==2.13.0: the CPU wheel; a bare `torch`
# would pull several GB of CUDA packages).
REQS := requirements/ci.txt
export MPLBACKEND ?= Agg
export MUJOCO_GL ?= egl
# 2-core machines: one intra-op thread per core avoids oversubscription when pytest/torch/BLAS overlap.
export OMP_NUM_THREADS ?= 2

.PHONY: setup ros-upstream demo test test-all test-robot-env bench docker clean help

help:
	@echo "make demo      set up and run the main job (sim pipeline; outputs under runs/demo)"
	@echo "make test      set up and run the default test suite (CI)"
	@echo "make test-all  also run the slow suites"
	@echo "make test-robot-env  the robot-environment subset only (Python 3.10, Humble's versions)"
	@echo "make bench     run the benchmarks (JSON under benchmarks/results/)"
	@echo "make docker    build the robot image (needs a Docker engine)"

setup: $(STAMP)

$(STAMP): $(REQS) postbc_core/pyproject.toml scripts/system_deps.sh
	bash scripts/system_deps.sh
	@command -v $(PY) >/dev/null || { echo "error: $(PY) not found; install Python >= 3.10 (apt-get install python3 python3-venv)"; exit 1; }
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "error: Python >= 3.10 required, found " + sys.version.split()[0])'
	@$(PY) -m venv --help >/dev/null 2>&1 || { echo "installing python3-venv"; apt-get update -qq && apt-get install -y -qq python3-venv; }
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r $(REQS)
	$(BIN)/pip install -q --no-deps --no-build-isolation -e postbc_core
	touch $(STAMP)

demo: setup
	$(BIN)/postbc pipeline --out runs/demo --overwrite

# The upstream ros2 launch / ros2 CLI the conformance tests run against (tests only; cached per machine, see the
# script). Without ../shared/third_party it prints why and the tests that need it skip.
ros-upstream: setup
	bash scripts/ros_upstream.sh $(VENV)

# The robot environment last (Python 3.10 with Humble's versions; skips with a message where no 3.10 exists).
test: setup ros-upstream
	bash scripts/run_tests.sh -m "not slow"
	bash scripts/test_py310.sh

test-robot-env:
	bash scripts/test_py310.sh

test-all: setup ros-upstream
	bash scripts/run_tests.sh

bench: setup
	$(BIN)/python benchmarks/run_all.py

docker:
	docker build -t postbc-robot:latest .

clean:
	rm -rf $(VENV) .venv-py310 runs outputs .pytest_cache  # the 3.10 venv itself: ~/.cache/postbc/venv-py310-*
