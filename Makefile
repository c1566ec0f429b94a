# ftso: every command a developer or CI needs. `make test` installs what it needs from scratch.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
CLUSTER := e2e/cluster
KUBECONFIG_PATH = $(shell bash -c 'source $(CLUSTER)/versions.sh && echo $$FTSO_KUBECONFIG')
PYTEST_ARGS ?=

.PHONY: help venv lint fmt crd lock manifests promtool checkov unit e2e test cluster-up cluster-down images kubeconfig demo demo-down bench clean

help:
	@echo "make demo         start the local cluster, the operator and a sample service"
	@echo "make test         unit and end-to-end tests (builds and starts the local control plane)"
	@echo "make lint         ruff, mypy --strict and the import contracts (layers)"
	@echo "make cluster-up   start the local control plane and its real node; cluster-down stops them"
	@echo "make images       build the real node's images (pause, counter) and import them if it is up"
	@echo "make crd          regenerate crds/ (and the chart's copy) and docs/api.md from operator/ftso/api/crd.py"
	@echo "make manifests    regenerate manifests/install.yaml from the Helm chart"
	@echo "make lock         regenerate requirements.lock (the image's dependencies, with hashes)"
	@echo "make promtool     build promtool (about 5 minutes cold; make unit does) to check the alert rules"

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

lint: venv
	$(BIN)/ruff check operator tests e2e bench examples
	$(BIN)/ruff format --check operator tests e2e bench examples
	$(BIN)/mypy
	$(BIN)/lint-imports

fmt: venv
	$(BIN)/ruff check --fix operator tests e2e bench examples
	$(BIN)/ruff format operator tests e2e bench examples

crd: venv
	$(BIN)/ftso crd > crds/ftso.dev_faulttolerantservices.yaml
	cp crds/ftso.dev_faulttolerantservices.yaml charts/ftso/crds/
	$(BIN)/ftso crd --markdown > docs/api.md

lock: venv
	$(BIN)/python -m pip install --quiet pip-tools
	$(BIN)/pip-compile --quiet --generate-hashes --strip-extras --no-header --no-emit-find-links \
	  --no-emit-index-url --output-file requirements.lock pyproject.toml

manifests: crd
	@$(CLUSTER)/build.sh >/dev/null
	hack/render-manifests.sh > manifests/install.yaml

# Not a prerequisite of `unit`: a cold build takes about 5 minutes on two cores; the rule tests skip without it.
promtool:
	@hack/promtool.sh

unit: venv promtool
	$(BIN)/pytest tests examples/counter $(PYTEST_ARGS)

e2e: venv cluster-up
	KUBECONFIG=$(KUBECONFIG_PATH) $(BIN)/pytest e2e --durations=15 $(PYTEST_ARGS)

test: lint unit e2e

cluster-up:
	@$(CLUSTER)/up.sh

cluster-down:
	@$(CLUSTER)/down.sh

images:
	@$(CLUSTER)/images.sh build
	@if $(CLUSTER)/node.sh status; then $(CLUSTER)/node.sh up; fi

kubeconfig:
	@echo $(KUBECONFIG_PATH)

demo: venv cluster-up
	@hack/demo.sh

demo-down:
	@hack/demo.sh stop

# checkov (from PyPI, in its own virtualenv) over the rendered manifests; accepted findings carry their
# reason in the chart (checkov.io/skip annotations).
checkov: manifests
	@test -x .venv-checkov/bin/checkov || ($(PYTHON) -m venv .venv-checkov && .venv-checkov/bin/pip install --quiet checkov)
	.venv-checkov/bin/checkov -f manifests/install.yaml --framework kubernetes --compact --quiet --skip-download

bench: venv cluster-up
	KUBECONFIG=$(KUBECONFIG_PATH) $(BIN)/python -m bench.scale $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
