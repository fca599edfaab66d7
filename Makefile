# Two entry points for a fresh machine: `make repro` (the pipeline) and `make test` (the suite).
# Each creates or reuses the virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: env lock lint repro repro-paper rehearse-paper check-report browser lab test test-slow bench gpu-check plan clean-env

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

# ITK, the optional extra that reads MetaImage (STOIC's .mha), pinned in requirements-itk.lock (~550 MB)
ITK_STAMP := $(VENV)/.itk-installed
$(ITK_STAMP): $(STAMP) requirements-itk.lock
	$(BIN)/python -m pip install --quiet -r requirements-itk.lock
	$(BIN)/python -m pip check
	touch $(ITK_STAMP)

# submitit, the optional extra that runs a stage's jobs on SLURM (params.yaml: executor), pinned in
# requirements-submitit.lock; the embedded default never imports it
SUBMITIT_STAMP := $(VENV)/.submitit-installed
$(SUBMITIT_STAMP): $(STAMP) requirements-submitit.lock
	$(BIN)/python -m pip install --quiet -r requirements-submitit.lock
	$(BIN)/python -m pip check
	touch $(SUBMITIT_STAMP)

# JupyterLab, the optional extra behind `make lab`, in an environment of its own: requirements-lab.lock, with
# requirements.lock's versions of what the two share. Installed beside the kit, its server's dependencies
# would make every MONAI import, so every stage, 2.6 s slower (tools/lock.py). Its kernels run the main
# environment's Python: `lab` puts .venv/bin first on PATH.
LAB_VENV := .venv-lab
LAB_STAMP := $(LAB_VENV)/.installed
$(LAB_STAMP): requirements.lock requirements-lab.lock
	test -x $(LAB_VENV)/bin/python || $(PYTHON) -m venv $(LAB_VENV)
	$(LAB_VENV)/bin/python -m pip install --quiet "$$(grep '^pip==' requirements.lock)"
	$(LAB_VENV)/bin/python -m pip install --quiet -c requirements.lock -c requirements-lab.lock \
		"$$(grep '^jupyterlab==' requirements-lab.lock)"
	$(LAB_VENV)/bin/python -m pip check
	touch $(LAB_STAMP)

# Debian's Chromium, for looking at the report as a person does (installed when none is found; needs root)
browser: $(STAMP)
	$(BIN)/python -m gvsl.report.browser --find 2>/dev/null || { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; }

lock: $(STAMP)
	$(BIN)/python tools/lock.py

# dvc runs the stages' commands (python -m gvsl.stage, which runs papermill) from the environment's bin folder
repro: $(STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/dvc repro

# the paper's settings on real data (profiles/paper.yaml) in a copy of the project whose data/ is the folder DATA
# (one sub-folder per dataset), so that this project's params.yaml and results/ stay as they are
# (build/<profile>/project; run again, it refreshes the copy and resumes). PROFILE=FILE runs another overlay.
PROFILE ?= profiles/paper.yaml
repro-paper: $(STAMP)
	@test -n "$(DATA)" || { echo "make repro-paper DATA=<folder of the datasets: pretrain, mmwhs, asoca, stoic, candi>"; exit 2; }
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m gvsl.pipeline.profile $(PROFILE) --data "$(DATA)"

# The paper profile's stages on small stand-ins of its datasets, in their own formats (gvsl/rehearsal/):
# profiles/paper.yaml with profiles/paper-rehearsal.yaml's sizes, iterations and widths, in build/rehearsal;
# PRECISION=bf16 trains and evaluates under CPU bf16 autocast, as the paper profile does on CUDA
rehearse-paper: $(ITK_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m gvsl.rehearsal $(if $(PRECISION),--precision $(PRECISION))

# results/report.html in headless Chromium: images load, tables render, nothing sticks out; build/report.png
check-report: browser
	$(BIN)/python -m gvsl.report.browser --screenshot build/report.png

# JupyterLab on the project, with the environment's Python kernel (the one papermill runs the stages on);
# extra arguments go in LAB_ARGS, e.g. `make lab LAB_ARGS="--no-browser --port 8890"`. As root (containers)
# Jupyter refuses to start without --allow-root, so it is added there.
lab: $(STAMP) $(LAB_STAMP)
	PATH="$(abspath $(BIN)):$$PATH" $(LAB_VENV)/bin/jupyter lab $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# ruff's lint rules and formatting ([tool.ruff] in pyproject.toml); `ruff format` and `ruff check --fix` apply them
lint: $(STAMP)
	$(BIN)/ruff check
	$(BIN)/ruff format --check

test: $(STAMP)
	$(BIN)/python -m pytest -m "not slow" -q

# the heavy checks: whole pipeline runs (one through submitit's local cluster), kill-and-resume, the paper
# rehearsal, the report in Chromium
test-slow: $(ITK_STAMP) $(SUBMITIT_STAMP) $(LAB_STAMP) browser
	$(BIN)/python -m pytest -m slow -q

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_pretrain.py

# the CUDA path on one GPU in one table (at most 8 minutes on an H100; README "Benchmarks"); without CUDA it
# says it skipped and exits 0. GPU_CHECK_ARGS=--record writes its rows into gvsl plan's timings table
gpu-check: $(STAMP)
	timeout 480 $(BIN)/python benchmarks/gpu_check.py $(GPU_CHECK_ARGS)

# what the current params.yaml will cost (PLAN_ARGS, e.g. "--params profiles/paper.yaml --devices 8 --device-kind h100")
plan: $(STAMP)
	$(BIN)/python -m gvsl plan $(PLAN_ARGS)

clean-env:
	rm -rf $(VENV) $(LAB_VENV)
