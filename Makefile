# Two commands on a fresh machine: `make serve` and `make test`. Each installs what it needs.
PYTHON ?= python3
VENV ?= .venv
HOST ?= 127.0.0.1
PORT ?= 8000
BIN = $(VENV)/bin

.PHONY: lock install install-test docs browser postgres orthanc container-tools container-base wheelhouse container serve serve-torch wheel test test-fast lint evaluate benchmark loadtest ddp-check benchmark-batch batch-fault-check serve-ray install-ray

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The pins are generated, never edited by hand: pyproject.toml's ranges are the one source, and `make lock`
# compiles them, with every transitive package, into one file per install (pip-tools, in its own venv).
LOCK_VENV ?= .venv-lock
PIP_COMPILE = $(LOCK_VENV)/bin/pip-compile --quiet --strip-extras --no-emit-index-url --no-emit-find-links \
	--no-emit-trusted-host --annotation-style line --unsafe-package lesionseg

$(LOCK_VENV)/bin/pip-compile:
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/pip install --quiet pip-tools==7.6.2

lock: $(LOCK_VENV)/bin/pip-compile
	$(PIP_COMPILE) --output-file requirements-onnx.txt pyproject.toml
	$(PIP_COMPILE) --extra train --output-file requirements.txt pyproject.toml
	$(PIP_COMPILE) --extra train --extra ray --output-file requirements-ray.txt pyproject.toml
	$(PIP_COMPILE) --extra test --output-file requirements-test.txt pyproject.toml

$(VENV)/.installed: $(BIN)/python requirements.txt pyproject.toml
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt requirements-ray.txt
	$(BIN)/pip install -r requirements-test.txt
	touch $@

install: $(VENV)/.installed

install-test: $(VENV)/.installed-test

# `make serve`: the lean install, as `pip install lesionseg` gives it: ONNX Runtime, no PyTorch (0.4 GB, not 6).
SERVE_VENV ?= .venv-serve
$(SERVE_VENV)/.installed: requirements-onnx.txt pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/pip install --quiet --upgrade pip
	$(SERVE_VENV)/bin/pip install -r requirements-onnx.txt
	$(SERVE_VENV)/bin/pip install --no-deps -e .
	touch $@

serve: $(SERVE_VENV)/.installed
	@echo "lesionseg's command line is $(SERVE_VENV)/bin/lesionseg (or: . $(SERVE_VENV)/bin/activate)"
	$(SERVE_VENV)/bin/lesionseg serve --host $(HOST) --port $(PORT)

# The same service on PyTorch, from the full environment (training, evaluation, tests).
serve-torch: install
	$(BIN)/lesionseg serve --backend pytorch --host $(HOST) --port $(PORT)

# The wheel users install: weights, ONNX graphs, the gate's statistics and the page's files inside. Built in
# an isolated environment (pip fetches the build backend pyproject.toml names), so it needs no full install.
BUILD_VENV ?= .venv-build
$(BUILD_VENV)/bin/pip:
	$(PYTHON) -m venv $(BUILD_VENV)

wheel: $(BUILD_VENV)/bin/pip
	$(BUILD_VENV)/bin/pip wheel --quiet --no-deps --wheel-dir dist .

# The container, with podman. Offline, as here: a Debian 12 root made by mmdebstrap from this machine's own apt
# sources, and every wheel downloaded on this machine first (wheelhouse/). Where a registry and the package
# index are reachable, `make wheelhouse` then `docker build .` (the official Python image) works as well.
# runc, not crun: crun refuses hosts whose cgroups are in hybrid mode, as this kind of machine's are.
PODMAN = CONTAINERS_CONF=$(CURDIR)/deploy/containers.conf podman --cgroup-manager cgroupfs --runtime runc
CONTAINER_BASE ?= lesionseg-base:bookworm
APT_SOURCES = $(firstword $(wildcard /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list))

container-tools:
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v mmdebstrap >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc mmdebstrap uidmap)

container-base: container-tools
	@$(PODMAN) image exists $(CONTAINER_BASE) || ( mkdir -p build \
		&& mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
			--aptopt='Acquire::Check-Valid-Until "false"' bookworm build/rootfs.tar $(APT_SOURCES) \
		&& $(PODMAN) import build/rootfs.tar $(CONTAINER_BASE) && rm build/rootfs.tar )

wheelhouse: $(BUILD_VENV)/bin/pip
	mkdir -p wheelhouse
	rm -f wheelhouse/lesionseg-*.whl
	$(BUILD_VENV)/bin/pip wheel --quiet --no-deps --wheel-dir wheelhouse .
	# `wheel`, not `download`: pyvips comes as source, built here into a wheel the offline build can install.
	$(BUILD_VENV)/bin/pip wheel --quiet --wheel-dir wheelhouse -r requirements-onnx.txt "psycopg[binary]==3.3.9"

container: container-base wheelhouse
	# --no-cache: the wheels are mounted, not copied, so a cached layer would not see a new wheel (35 s here).
	$(PODMAN) build --quiet --no-cache --format docker --build-arg BASE=$(CONTAINER_BASE) --build-arg PIP_NO_INDEX=true \
		-t lesionseg .

# The same app replicated by Ray Serve; replicas and autoscaling are set in deploy/ray-serve.yaml.
$(VENV)/.installed-ray: $(VENV)/.installed requirements-ray.txt
	$(BIN)/pip install -r requirements-ray.txt
	touch $@

install-ray: $(VENV)/.installed-ray

serve-ray: install-ray
	$(BIN)/serve run deploy/ray-serve.yaml

# The page tests drive Debian's Chromium; test tools never download a browser of their own.
browser:
	@command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The review worklist is tested on PostgreSQL too, on a server the tests start (Debian's package).
postgres:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# The PACS worker is tested against a real PACS the tests start (Debian's Orthanc with its DICOMweb plugin), and
# what it writes is checked by dciodvfy (Debian's dicom3tools).
orthanc:
	@(command -v Orthanc >/dev/null || test -x /usr/sbin/Orthanc) && test -f /usr/share/orthanc/plugins/libOrthancDicomWeb.so && command -v dciodvfy >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc orthanc-dicomweb dicom3tools)

test: install-test browser postgres orthanc container-tools
	$(BIN)/python -m pytest

# The documentation site from docs/ (MkDocs, Material), into site/; `make test` builds it with --strict.
docs: install-test
	$(BIN)/mkdocs build --strict

# The tier a developer runs on every change: unit and in-process tests, no servers, CLIs, clusters or browsers.
test-fast: install-test
	$(BIN)/python -m pytest -m "not slow"

lint: install-test
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

evaluate: install
	$(BIN)/lesionseg evaluate --record --output runs/evaluation-default.json

benchmark: install-test
	$(BIN)/python benchmarks/serving.py

# 16 concurrent clients for 2 minutes against a real server: no 5xx, nothing lost, memory flat.
loadtest: install-test
	$(BIN)/python benchmarks/load_test.py --clients 16 --duration 120

# One process against two under torchrun, same global batch and seed: final ISIC Jaccards within 0.01.
ddp-check: install
	$(BIN)/python benchmarks/ddp_check.py --epochs 3 --samples-per-epoch 1600 --batch-size 16 --threads 1

# Batch throughput, the local engine against Ray Data on a local cluster (same images, same run).
benchmark-batch: install-test
	$(BIN)/python benchmarks/batch.py --images 300

# A Ray batch job of 2,000 images with one worker killed mid-way: every image written exactly once.
batch-fault-check: install-test
	$(BIN)/python benchmarks/batch_fault.py --images 2000 --kill-after-rows 300

