# Self-documenting: `make help` lists every target with a `## ` comment.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Steps start `mlflow` and `uvicorn` as programs: the venv's bin/ must be on PATH.
export PATH := $(abspath $(VENV))/bin:$(PATH)

# A make variable reaches a program with its text exactly as given (`$(value ...)`: a quote, `$`
# or space stays what it is, for the program to accept or refuse in one `error:` line), through
# the recipe's environment or as one quoted word (`shell_word`), never read by the shell.
# `make VAR=...` and `VAR=... make` alike; `override`: one given on the command line is
# exported as given.
#
# Exit status: GNU make exits 2 whenever a recipe fails, whatever the program's own code, and
# adds a line `make: *** [Makefile:N: target] Error <code>` naming that code. A script that must
# tell bad input (2) from transient (75) runs the program itself: the recipe's command line,
# e.g. `.venv/bin/python -m workflows.demo up` or `.venv/bin/python workflows/submit.py --render
# out` (README, "Exit codes through make").

# The same text as one quoted shell word, for recipes whose values `make -n` should show: each
# `'` closed, escaped and reopened, nothing else read. `$(call shell_word,NAME)`.
shell_word = '$(subst ','\'',$(value $(1)))'
# The words of the exported variable $(2), split at any white space (line breaks too: `read -ra`
# alone stops at the first one and drops the rest), into the bash array $(1); nothing else read.
# `read -d ''` reads to the end and so returns 1. `$(call read_words,ARRAY,VARIABLE)`.
read_words = read -rd '' -a $(1) <<< "$$$(2)" || true

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

# The venv is rebuilt when the project's dependencies or the lock change.
$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==26.3
	$(PY) -m pip install --quiet -c requirements.lock -e '.[dev,bigquery]'
	touch $@

.PHONY: setup
setup: $(STAMP) ## Create .venv and install the project with dev extras (done automatically by other targets)

.PHONY: test
test: $(STAMP) ## Run the test suite (unit + real MLflow / model-server tests); the one command CI runs
	$(PY) -m pytest -m "not docker and not on_cluster"

# Loopback only; about 4 minutes. BENCH_ARGS=--attribution adds the half-way set-ups.
BENCH_ARGS ?=
.PHONY: bench-serving
bench-serving: export MAKE_ARGS = $(value BENCH_ARGS)
bench-serving: $(STAMP) ## Serving benchmark (needs wrk: apt-get install -y wrk): ours vs stock `mlflow models serve` vs bare ASGI floor
	$(call read_words,args,MAKE_ARGS); $(PY) benchmarks/bench_serving.py "$${args[@]}"

# Generates ~1 GB of GSOD-format files per scale step in a temp dir (removed after); a few minutes.
BENCH_FETCH_ARGS ?= --scale 1
.PHONY: bench-fetch
bench-fetch: export MAKE_ARGS = $(value BENCH_FETCH_ARGS)
bench-fetch: $(STAMP) ## Data benchmark: fetch (full-year GSOD files) + validate + fit vs a plain pyarrow.csv read; BENCH_FETCH_ARGS="--scale 4"
	$(call read_words,args,MAKE_ARGS); $(PY) benchmarks/bench_pipeline.py "$${args[@]}"

.PHONY: bench-deploy
bench-deploy: $(STAMP) ## Local deploy benchmark: first deploy, swap and no-op times; /ping dark time and requests refused or failed under load during a swap
	$(PY) benchmarks/bench_deploy_local.py

# Pipeline scale: GSOD-format files for 16 years (~14 GiB) are generated once into BENCH_CACHE and
# reused; 1,4,16 took 21 minutes on 2 cores with the fan-out column, 4 of them generating the
# files (README "Performance"); SCALES=1 about 2.
SCALES ?= 1,4,16
BENCH_ROUNDS ?= 3
BENCH_CACHE ?= /tmp/dewpoint-bench-gsod
# `make bench QUICK=1`: scale 1 only, one round each, short serving runs, two demo runs.
ifdef QUICK
SCALES := 1
BENCH_ROUNDS := 1
BENCH_ARGS := --rounds 1 --seconds 2
BENCH_DEMO_RUNS := 2
endif
.PHONY: bench-scale
bench-scale: $(STAMP) ## Pipeline scale benchmark at SCALES=1,4,16 years: fetch+validate+train in one task, the per-year fan-out (each task's peak RSS vs its pod limit), pyarrow read + lstsq
	$(PY) benchmarks/bench_scale.py --scales $(call shell_word,SCALES) --rounds $(call shell_word,BENCH_ROUNDS) --cache-dir $(call shell_word,BENCH_CACHE)

# Each benchmark prints its own figures and ratios; the lines with ratios are repeated at the end.
.PHONY: bench
bench: $(STAMP) ## Every benchmark in turn (scale, serving, deploy, demo; image sizes if Docker is up); SCALES=1 or QUICK=1 for a short run
	log=$$(mktemp); failed=(); \
	for target in bench-scale bench-serving bench-deploy bench-demo; do \
		echo "==== make $$target" | tee -a $$log; \
		$(MAKE) $$target 2>&1 | tee -a $$log || failed+=($$target); \
	done; \
	echo "==== image sizes" | tee -a $$log; \
	if $(DOCKER) info >/dev/null 2>&1; then \
		$(PY) benchmarks/bench_image_sizes.py 2>&1 | tee -a $$log || failed+=(bench-image-sizes); \
	else echo "skipped: Docker is not running" | tee -a $$log; fi; \
	echo; echo "==== ratios"; awk '/^==== /{b=0; print; next} /x stock|^target/{b=1} \
		b{print; if ($$0 == "") b=0; next} (/ \/ |ours time|x of what/ && !/copies =/)' $$log; \
	rm -f $$log; \
	if (( $${#failed[@]} )); then echo "failed: $${failed[*]}"; exit 1; fi

# ---- Local demo (workflows/demo.py): everything on 127.0.0.1, state under .demo/ ----------------
# MLFLOW_PORT and SERVE_PORT: the demo's ports, its defaults (workflows/demo.py) unless set.
# Default synthetic (offline); gsod with PARAMS="gsod-path=DIR" (a local folder or .tar.gz of GSOD
# files), or SOURCE=gsod alone for NOAA's archives over HTTPS.
SOURCE ?=
# Extra workflow parameters, e.g. PARAMS="years=2024 stations=72530094846" with SOURCE=gsod.
PARAMS ?=

# The demo reads MLFLOW_PORT and SERVE_PORT itself (empty: its default); PARAMS is split at
# white space (line breaks too) into one `-p` each (no other shell reading: a `*`, quote or `$` stays as written).
.PHONY: demo
demo: export MAKE_SOURCE = $(value SOURCE)
demo: export MAKE_PARAMS = $(value PARAMS)
demo: export override SERVE_PORT := $(value SERVE_PORT)
demo mlflow-up: export override MLFLOW_PORT := $(value MLFLOW_PORT)
demo: $(STAMP) ## Run the whole pipeline locally (MLflow, local runner, served model); SOURCE=gsod for NOAA data, PARAMS="gsod-path=DIR" for local GSOD files
	$(call read_words,words,MAKE_PARAMS); params=(); for p in "$${words[@]}"; do params+=(-p "$$p"); done; \
	$(PY) -m workflows.demo up $${MAKE_SOURCE:+--source "$$MAKE_SOURCE"} "$${params[@]}"

.PHONY: demo-down
demo-down: $(STAMP) ## Stop the demo's model server and MLflow server (by the PIDs recorded in .demo/)
	$(PY) -m workflows.demo down

.PHONY: mlflow-up
mlflow-up: $(STAMP) ## Start (or reuse) the demo's MLflow server on 127.0.0.1 (MLFLOW_PORT=... picks the port)
	$(PY) -m workflows.demo mlflow-up

BENCH_DEMO_RUNS ?= 3
.PHONY: bench-demo
bench-demo: $(STAMP) ## Time demo runs per step, the first cold (private dir, free ports), against the 60 s goal; BENCH_DEMO_RUNS=3
	$(PY) benchmarks/bench_demo.py --runs $(call shell_word,BENCH_DEMO_RUNS)

.PHONY: lint
lint: $(STAMP) ## ruff check and format check; deptry: every import declared in pyproject.toml
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/deptry .
	@# Runtime code again without the test tools' DEP004 exemption: steps/ and workflows/ import no dev tool.
	$(VENV)/bin/deptry steps workflows --per-rule-ignores 'DEP002=uvloop|httptools'

.PHONY: docs
docs: $(STAMP) ## Regenerate the flag, output and workflow-parameter tables of docs/steps.md from steps/stages.py
	$(PY) -m steps.docs docs/steps.md

.PHONY: fmt
fmt: $(STAMP) ## Format the code with ruff
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# The demo's servers are stopped first (by the PIDs in .demo/, as demo-down does): deleting their
# state files while they run would leave them running with nothing left to stop them by.
.PHONY: clean
clean: ## Stop the demo's servers, then remove the venv, caches and local run state
	@if [ -d .demo ]; then \
		if [ -x '$(PY)' ]; then '$(PY)' -m workflows.demo down; \
		elif compgen -G '.demo/*/server.json' >/dev/null; then \
			echo "error: .demo/ records servers the demo started, but $(VENV) is gone: run" \
				"\`make demo-down\` (it recreates $(VENV)), then \`make clean\`" >&2; exit 1; \
		fi; \
	fi
	rm -rf $(VENV) .pytest_cache .ruff_cache out .demo

# ---- Argo resources (workflows/) ---------------------------------------------------------------
.PHONY: render
render: $(STAMP) ## Render the WorkflowTemplate and CronWorkflow YAML into out/ (strictly validated offline)
	$(PY) workflows/submit.py --render out

.PHONY: update-golden
update-golden: $(STAMP) ## Regenerate tests/golden/*.yaml from the builders (review the diff; refused when CI is set)
	UPDATE_GOLDEN=1 $(PY) -m pytest -q tests/test_pipeline_render.py

# ---- Images (docker/) --------------------------------------------------------------------------
# Tags come from the package version in pyproject.toml, read here and nowhere else.
DOCKER ?= docker
KIND_CLUSTER ?= dewpoint
IMAGE_PREFIX ?= dewpoint-pipeline
IMAGES := step mlflow serve
IMAGE_VERSION := $(shell $(PYTHON) -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
GIT_REVISION := $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
# Uncommitted changes (untracked files included) go into the image too: say so in its labels.
GIT_DIRTY = $(shell git status --porcelain 2>/dev/null | grep -q . && echo true || echo false)
# org.opencontainers.image.source: the public clone URL, when origin is one.
SOURCE_URL ?= $(shell git remote get-url origin 2>/dev/null | grep '^https://' || true)
# Official slim image by tag; `make base-image` builds local/python-base:trixie where no registry is reachable.
BASE_IMAGE ?= python:3.13-slim-trixie
LOCAL_BASE_IMAGE ?= local/python-base:trixie
# CA bundle of a TLS-intercepting proxy, handed to pip as the BuildKit secret `pipca` (optional).
PIP_CA_BUNDLE ?=
UV_COMPILE := $(VENV)/bin/uv pip compile --quiet --universal --python-version 3.13 --generate-hashes \
	--custom-compile-command "make lock-images" -c requirements.lock

.PHONY: lock-images
lock-images: $(STAMP) ## Regenerate the hashed Python 3.13 locks of the images (docker/requirements-*.lock)
	$(UV_COMPILE) --extra bigquery pyproject.toml -o docker/requirements-step.lock
	$(UV_COMPILE) docker/requirements-mlflow.in -o docker/requirements-mlflow.lock
	$(UV_COMPILE) docker/requirements-serve.in -o docker/requirements-serve.lock
	$(PYTHON) -c 'import tomllib; print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")' \
		| $(UV_COMPILE) - -o docker/requirements-build.lock

# The venv's lock (Python 3.11+, every platform) first: the image locks take it as constraints.
.PHONY: lock
lock: $(STAMP) ## Regenerate requirements.lock from pyproject.toml (uv), then the image locks
	$(VENV)/bin/uv pip compile --quiet --universal --python-version 3.11 --extra dev --extra bigquery \
		--custom-compile-command "make lock" pyproject.toml -o requirements.lock
	$(MAKE) lock-images

.PHONY: base-image
base-image: ## Build local/python-base:trixie (Python 3.13) with debootstrap, for hosts without a registry; skipped if present
	DOCKER=$(DOCKER) docker/base-image.sh $(LOCAL_BASE_IMAGE)

.PHONY: images
images: ## Build the step, mlflow and serve images (BASE_IMAGE=..., PIP_CA_BUNDLE=/path/to/ca.pem)
	ca='$(PIP_CA_BUNDLE)'; for target in $(IMAGES); do \
		DOCKER_BUILDKIT=1 $(DOCKER) build --network host --target $$target \
			--build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(IMAGE_VERSION) \
			--build-arg GIT_REVISION=$(GIT_REVISION) --build-arg GIT_DIRTY=$(GIT_DIRTY) \
			--build-arg SOURCE_URL=$(SOURCE_URL) \
			$${ca:+--secret id=pipca,src=$$ca} \
			--tag $(IMAGE_PREFIX)/$$target:$(IMAGE_VERSION) --file docker/Dockerfile . ; \
	done
	$(DOCKER) image ls --format '{{.Repository}}:{{.Tag}}\t{{.Size}}' '$(IMAGE_PREFIX)/*:$(IMAGE_VERSION)'

.PHONY: kind-load
kind-load: ## Load the three images into the kind cluster (KIND_CLUSTER, default dewpoint); works with Docker's containerd image store
	DOCKER=$(DOCKER) KIND_CLUSTER_NAME=$(KIND_CLUSTER) kind/load-images.sh $(foreach target,$(IMAGES),$(IMAGE_PREFIX)/$(target):$(IMAGE_VERSION))

.PHONY: test-containers
test-containers: $(STAMP) ## CI container stage: Docker + base image + images, then pytest -m docker
	DOCKER=$(DOCKER) scripts/container-stage.sh

# ---- Local cluster (kind/) ---------------------------------------------------------------------
# Everything lives in kind/*.sh (strict bash); pinned versions in kind/versions.env.

.PHONY: tools
tools: ## Install the pinned kind, kubectl and helm into ./bin (sha256-checked; skipped if on PATH)
	@kind/tools.sh

.PHONY: argo-manifest
argo-manifest: ## Download Argo's release install.yaml (pinned version and sha256) into kind/argo/upstream; ARGO_INSTALL_YAML=path copies a local file
	@kind/argo-manifest.sh

.PHONY: kind-up
kind-up: $(STAMP) tools argo-manifest ## Create or reuse the kind cluster, load the images, install Traefik, Argo, MLflow, SeaweedFS
	@kind/up.sh

.PHONY: kind-down
kind-down: ## Delete the kind cluster (and with it every model, run and artifact in it)
	@kind/down.sh

.PHONY: publish
publish: $(STAMP) ## Install or update the WorkflowTemplate and CronWorkflow on the kind cluster (short-lived pipeline-publisher token)
	@kind/publish.sh

.PHONY: argo-token
argo-token: ## Print a bearer token for the Argo UI and ARGO_TOKEN (pipeline-operator account)
	@kind/argo-token.sh

.PHONY: mlflow-login
mlflow-login: ## Print the read-only MLflow UI login (user viewer) for http://localhost/mlflow/
	@kind/mlflow-login.sh

.PHONY: smoke
smoke: ## Predict through the ingress: POST a dataframe_split to http://localhost/model/invocations
	@kind/smoke.sh

.PHONY: e2e
e2e: $(STAMP) kind-up ## On-cluster end-to-end test: run the pipeline twice, predict through the ingress
	$(PY) -m pytest -m on_cluster tests/test_on_cluster.py -v
