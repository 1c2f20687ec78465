# make demo  - offline demo: the whole DAG on a CPU in 8-10 minutes (creates .venv on first use)
# make demo-full - the longer demo it was cut from (configs/demo-full.yaml; its bill: plan.py)
# make test  - the default test suite (< 10 min on 2 cores)
# make test-all - also the heavy checks: real SLURM cluster, kill-and-resume drills
# make schema - rewrite workflow/schemas/config.schema.yaml after a settings change (committed)
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# torch is a range in pyproject.toml; this pin only picks the CPU wheel that this project's
# CI machines carry on disk. On your machine: make demo TORCH_SPEC=torch (or a CUDA build).
TORCH_SPEC ?= torch==2.13.0
# requirements.lock: the exact versions CI tested (everything but torch), from `make lock`.
# Installing with -c takes those versions; pyproject.toml keeps ranges for other installs.
LOCK ?= requirements.lock
# uv installs the venv: 27-64 s on the 2-core CI VM, bytecode compiled, where pip took 60-150 s
# (`make demo` counts this time). uv reads no pip configuration: it is handed the wheel
# directories pip is configured with (global.find-links or PIP_FIND_LINKS; CI's torch CPU wheel
# lies in one), not pip's index or constraint settings, and otherwise installs from PyPI.
# --compile-bytecode: pip compiles at install and uv does not by default; where the shell sets
# PYTHONDONTWRITEBYTECODE=1 (this project's machines do), every job then compiled transformers
# and torch again: 10 s of CPU per import instead of 4 s, and a demo run took 759 s.
UV_SPEC ?= uv==0.13.9
PIP_LINKS = $(sort $(PIP_FIND_LINKS) $(shell python3 -m pip config get global.find-links 2>/dev/null))
UV_INSTALL = $(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) $(foreach d,$(PIP_LINKS),--find-links $(d))

.PHONY: env lock demo demo-full test test-all dryrun lint clean-demo schema

$(VENV)/.installed: pyproject.toml $(LOCK)
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet "$(UV_SPEC)"
	$(UV_INSTALL) "$(TORCH_SPEC)" -c $(LOCK)
	$(UV_INSTALL) -c $(LOCK) -e '.[dev]'
	touch $@

# Re-resolve the lock after a pyproject.toml change (linux x86_64, Python 3.11; torch left to
# TORCH_SPEC, resolved as the CPU wheel so that no CUDA-only dependency enters the lock).
lock: env
	echo "torch==2.13.0+cpu" > $(VENV)/torch-override.txt
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --python-version 3.11 \
	    --python-platform x86_64-unknown-linux-gnu --find-links /opt/wheels \
	    --override $(VENV)/torch-override.txt --no-emit-package torch \
	    --annotation-style line --no-header -o $(LOCK).body
	{ echo "# Exact versions CI tested: make env installs with -c requirements.lock. Made by"; \
	  echo "# make lock (uv pip compile pyproject.toml --extra dev; linux x86_64, py3.11; torch"; \
	  echo "# excluded: TORCH_SPEC picks it, a CUDA build on a GPU machine)."; \
	  cat $(LOCK).body; } > $(LOCK) && rm $(LOCK).body

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/snakemake --configfile configs/demo.yaml --cores $(CORES) --printshellcmds

demo-full: env
	$(VENV)/bin/snakemake --configfile configs/demo-full.yaml --cores $(CORES) --printshellcmds

test: env
	$(PY) -m pytest

test-all: env
	$(PY) -m pytest -m "slow or slurm or drill or not (slow or slurm or drill)"

# the complete config schema, from workflow/schemas/config.schema.in.yaml and the settings
# dataclasses; tests/test_settings.py fails while the committed file differs
schema: env
	$(PY) -m asymprune.workflow_config --write-schema

dryrun: env
	$(VENV)/bin/snakemake -n

# snakemake --lint, allowing only the lint judged wrong for this project (see the test)
lint: env
	$(PY) -m pytest tests/test_workflow.py -k lint

clean-demo:
	rm -rf results/demo reports/demo/tables reports/demo/figures reports/demo/DONE
	rm -rf results/demo-full reports/demo-full
