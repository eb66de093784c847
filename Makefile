# genq's entry points. Everything real happens in scripts/ and the `genq` CLI; this file only
# names the usual verbs. `make test` on a fresh Debian 12 machine sets everything up first.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

VENV := .venv
PY := $(VENV)/bin/python
GENQ := $(VENV)/bin/genq
PYTEST_ARGS ?=

# vLLM on CPU sizes its KV cache from this (GiB). 2 GiB holds the test models' caches many
# times over and leaves the 24 GiB machines room for a worker or two plus the test process.
export VLLM_CPU_KVCACHE_SPACE ?= 2

.PHONY: help setup python services models test test-unit lint docs demo bench clean distclean

help:
	@echo "make setup      venv + package, RabbitMQ and Redis, test models (idempotent)"
	@echo "make models     (re)build the test models in .genq/models when their code changed"
	@echo "make services   start local RabbitMQ and Redis if they are not answering"
	@echo "make test       set up, lint, build the docs, then all tests (unit + integration)"
	@echo "make test-unit  unit tests only (no services, no engine)"
	@echo "make lint       ruff (lint and format check) and mypy, as configured in pyproject"
	@echo "make docs       build the documentation site into build/site (mkdocs, strict)"
	@echo "make demo       set up, then genq demo"
	@echo "make bench      set up, then genq bench"
	@echo "make clean      caches and built models; distclean also removes .venv"

setup:
	bash scripts/setup.sh

python:
	bash scripts/setup.sh python

services:
	bash scripts/setup.sh services

models: python
	bash scripts/setup.sh models

# pytest's status is the recipe's status: a failure, and exit 5 ("no tests collected"),
# fail make (which then exits 2), so CI cannot pass on an empty or broken test run.
test: setup
	$(MAKE) lint
	$(MAKE) docs
	$(PY) -m pytest tests -ra $(PYTEST_ARGS)

test-unit: python
	$(PY) -m pytest tests -ra -m "not integration" $(PYTEST_ARGS)

# Each tool reads its settings from pyproject.toml (mypy: which packages, how strictly).
lint: python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# --strict: a broken link or anchor, or a settings field without a description (the
# settings reference is generated from the code: docs/hooks/reference.py), fails the build.
# NO_MKDOCS_2_WARNING silences mkdocs-material's banner about its successor.
docs: python
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir build/site

demo: setup
	$(GENQ) demo

bench: setup
	$(GENQ) bench

clean:
	rm -rf .genq build .pytest_cache .hypothesis .mypy_cache .ruff_cache *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
