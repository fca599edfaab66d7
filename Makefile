# Two entry points for a fresh machine: `make repro` (the pipeline) and `make test` (the suite).
# Each creates or reuses the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env lock repro repro-paper lab test test-slow bench clean-env

# The environment is rebuilt exactly from requirements.lock (every package pinned); `make lock`
# regenerates the lock from pyproject.toml after a dependency changes there.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "$$(grep '^pip==' requirements.lock)"
	$(BIN)/python -m pip install --quiet -r requirements.lock
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $(STAMP)

env: $(STAMP)

lock: $(STAMP)
	$(BIN)/python tools/lock.py

# dvc runs the stages' commands (python -m gvsl.stage, which runs papermill) from the environment's bin folder
repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# the paper's settings on real data (see profiles/paper.yaml); `git checkout params.yaml` goes back
repro-paper: $(STAMP)
	cp profiles/paper.yaml params.yaml
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# JupyterLab on the project, with the environment's Python kernel (the one papermill runs the stages on);
# extra arguments go in LAB_ARGS, e.g. `make lab LAB_ARGS="--no-browser --port 8890"`. As root (containers)
# Jupyter refuses to start without --allow-root, so it is added there.
lab: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pretrain.py

clean-env:
	rm -rf $(VENV)
