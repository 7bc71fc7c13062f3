# The two set-up commands of the README: `make run` (default pipeline) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# pytorch-fid (needs torchvision, i.e. a 5 GB torch build): only for the FID exactness tests
REF    ?= .venv-ref
# the torch `make install` puts in $(VENV) (`make test-torch` pins another in a venv of its own)
TORCH_PIN ?= 2.13.0
export PATH := $(abspath $(BIN)):$(PATH)
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export DVC_NO_ANALYTICS := 1
# params.yaml's tracking store (tracking.tracking_uri; its default where params.yaml has no such line). A relative
# local one (sqlite:///mlflow.db, a folder) is made absolute, so that experiments run in DVC's temporary copies log to
# the same store; any other (a server, an absolute path, a value this cannot read) is left to params.yaml. An
# MLFLOW_TRACKING_URI set outside make wins, as everywhere.
PARAMS_STORE := $(shell \
	u=$$(sed -n -E "s/^[[:space:]]*tracking_uri:[[:space:]]*(\"([^\"]*)\"|'([^']*)'|([^[:space:]\#]*)).*/\2\3\4/p" \
		params.yaml 2>/dev/null | head -n 1); \
	if [ -z "$$u" ] && ! grep -Eq '^[[:space:]]*tracking_uri:|tracking:[[:space:]]*[{]' params.yaml 2>/dev/null; then \
		u=sqlite:///mlflow.db; fi; \
	case "$$u" in \
		(""|sqlite:////*|/*|~*|file:*) ;; \
		(sqlite:///*) printf '%s' "sqlite:///$(CURDIR)/$$(printf '%s' "$$u" | cut -c11-)" ;; \
		(*://*|*:*) ;; \
		(*) printf '%s' "$(CURDIR)/$$u" ;; \
	esac)
ifneq ($(PARAMS_STORE),)
export MLFLOW_TRACKING_URI ?= $(PARAMS_STORE)
endif

# the ACGAN ablation: loss x discriminator variant x seed on the cartoon set, at the budget of params.ablation.yaml
# (docs/ablation.md); FID and attribute-accuracy tables with mean +- std per cell (override on the command line)
SWEEP_LOSSES   ?= nonsaturating,hinge,wgan-gp
SWEEP_VARIANTS ?= plain,sn,projection
SWEEP_SEEDS    ?= 0,1
SWEEP_BUDGET   ?= params.ablation.yaml
SWEEP_ARGS     ?=
# the transfer study at the budget of docs/transfer.md: one DVC experiment (`dvc exp show`, MLflow)
STUDY          ?= params.transfer-study.yaml
CRON           ?= 0 2 * * *
# `make explore`: the latent explorer over the registry's best model of the first dataset (EXPLORE_ARGS: other model, port)
EXPLORE_ARGS   ?=
# Debian's chromium: the browser the explorer's test drives through Playwright (never a downloaded browser build)
CHROMIUM       ?= /usr/bin/chromium
PY_DIRS        := src tests bench stages pipelines
SUDO           := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test test-slow test-all test-torch lint caches sweep transfer-study serve explore install dev clean-venv deps

run: install
	dvc repro
	-$(BIN)/facegan timings --log --quiet
	$(BIN)/facegan summary

sweep: install
	eval dvc exp run --queue -S train.model=acgan -S train.loss=$(SWEEP_LOSSES) -S train.d_variant=$(SWEEP_VARIANTS) \
		-S train.seed=$(SWEEP_SEEDS) "$$($(BIN)/facegan exp-args $(SWEEP_BUDGET))" $(SWEEP_ARGS) report@cartoon
	dvc exp run --run-all --jobs 1
	$(BIN)/facegan exp-table --rows train.loss --cols train.d_variant --where train.model=acgan \
		--metric data/reports/cartoon/metrics.json:fd_dlib --out sweep.md
	$(BIN)/facegan exp-table --rows train.loss --cols train.d_variant --where train.model=acgan \
		--metric data/reports/cartoon/metrics.json:attr_acc_mean --out sweep_acc.md

# in the workspace: data/transfer/ gets the study's table and plots; params.yaml holds its values afterwards
# (`git checkout params.yaml && dvc checkout` returns to the default pipeline)
transfer-study: install
	eval dvc exp run -n transfer-study "$$($(BIN)/facegan exp-args $(STUDY))" transfer-table
	cat data/transfer/fid_table.md

serve: install
	$(BIN)/python pipelines/serve.py --params params.yaml --root . --cron "$(CRON)"

explore: install
	$(BIN)/facegan explore $(EXPLORE_ARGS)

# FACEGAN_TEST_STRICT: what these targets install (the FID reference environment, chromium) must be there:
# a test that needs it fails instead of skipping
test: lint caches $(REF)/.installed $(CHROMIUM)
	FACEGAN_TEST_STRICT=1 $(BIN)/python -m pytest --durations=15; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; rc=0; fi; exit $$rc

test-slow: dev caches $(REF)/.installed $(CHROMIUM)
	FACEGAN_TEST_STRICT=1 $(BIN)/python -m pytest -m slow; rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no slow tests collected"; rc=0; fi; exit $$rc

test-all: lint caches $(REF)/.installed $(CHROMIUM)
	FACEGAN_TEST_STRICT=1 $(BIN)/python -m pytest -m ''

# the default tests under another PyTorch: `make dev` into a venv of its own with that torch pinned, the same pins
# otherwise (~5 GB: PyPI's CUDA wheels, used on the CPU). TORCH=2.11.0 is the lent GPU machines' version, 2.5.1 the
# floor of pyproject.toml
TORCH ?= 2.11.0
TORCH_VENV := $(abspath .venv-torch$(TORCH))
test-torch: caches $(CHROMIUM)
	$(MAKE) dev VENV=$(TORCH_VENV) TORCH_PIN=$(TORCH)
	PATH=$(TORCH_VENV)/bin:$$PATH $(TORCH_VENV)/bin/python -m pytest --durations=15

# the model files ../shared holds (BlazeFace, YuNet, the OpenCV super-resolution models) into the standard caches;
# with them present the real-weight tests run (and fail, not skip, when a file is missing)
caches:
	@if [ -f ../shared/scripts/seed-caches.sh ]; then bash ../shared/scripts/seed-caches.sh; else echo "no ../shared: the real-weight tests skip"; fi

# the checks of .pre-commit-config.yaml: ruff lint + format check on every Python file, mypy on src/facegan
lint: dev
	$(BIN)/ruff check $(PY_DIRS)
	$(BIN)/ruff format --check $(PY_DIRS)
	$(BIN)/mypy

install: $(VENV)/.installed
# what only the tests need: pytest, playwright, ruff, mypy, onnx, and the Dask runner's prefect-dask (the default
# pipeline runs without them, so `make run` does not install them)
dev: $(VENV)/.dev

# rewrite the code deps of every dvc.yaml stage from what its script imports (tests/test_dvc_deps.py checks them)
deps: install
	$(BIN)/python tests/depgraph.py --write

# torch==$(TORCH_PIN) first (2.13.0: its CPU wheel is on local disk); the project's torch range then installs nothing
# more.
# Last, no-deps.txt without the dependencies it declares (a second, GUI OpenCV): pyproject.toml lists the real ones.
$(VENV)/.installed: pyproject.toml no-deps.txt
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "facegan needs Python 3.11, got " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet "torch==$(TORCH_PIN)"
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/python -m pip install --quiet --no-deps -r no-deps.txt
	$(BIN)/python -c "import rembg"  # pymatting compiles and caches its numba kernels on first import (minutes)
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet -e ".[dev,dask]"
	touch $@

$(REF)/.installed:
	$(PYTHON) -m venv $(REF)
	$(REF)/bin/python -m pip install --quiet "torch==2.14.1" "torchvision==0.29.1" "pytorch-fid==0.3.0" \
		"pydantic>=2.6,<3" "pyyaml>=6,<7" "tqdm>=4.66,<5"  # facegan's extractor too: bench/fid.py times both in one torch
	touch $@

# skipped when the file exists
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

clean-venv:
	rm -rf $(VENV) $(REF)
