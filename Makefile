# make demo  - offline demo: the whole DAG on a CPU in minutes (creates .venv on first use)
# make test  - the default test suite (< 10 min on 2 cores)
# make test-all - also the heavy checks: real SLURM cluster, kill-and-resume drills
VENV ?= .venv
PY := $(VENV)/bin/python
CORES ?= 2
# torch is a range in pyproject.toml; this pin only picks the CPU wheel that this project's
# CI machines carry on disk. On your machine: make demo TORCH_SPEC=torch (or a CUDA build).
TORCH_SPEC ?= torch==2.13.0

.PHONY: env demo test test-all dryrun lint clean-demo

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

env: $(VENV)/.installed

demo: env
	$(VENV)/bin/snakemake --configfile configs/demo.yaml --cores $(CORES) --printshellcmds

test: env
	$(PY) -m pytest

test-all: env
	$(PY) -m pytest -m "slow or slurm or drill or not (slow or slurm or drill)"

dryrun: env
	$(VENV)/bin/snakemake -n

# snakemake --lint, allowing only the lint judged wrong for this project (see the test)
lint: env
	$(PY) -m pytest tests/test_workflow.py -k lint

clean-demo:
	rm -rf results/demo reports/demo/tables reports/demo/figures reports/demo/DONE
