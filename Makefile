# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= data/demo
DEMO_EVENTS ?= 300000

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Installs the package and fetches the Delta jars once into ~/.cache/seglake (offline afterwards).
setup: $(STAMP)
	$(BIN)/seglake setup

demo: setup
	$(BIN)/seglake synth --events $(DEMO_EVENTS) --out $(DEMO_DIR) --corrupt-rate 0.01 --seed 7
	SEGLAKE_EVENTS=$(CURDIR)/$(DEMO_DIR)/events SEGLAKE_LAKEHOUSE=$(CURDIR)/lakehouse \
		$(BIN)/seglake run --config conf/tiktok_users.yaml --run-id demo
	@echo "outputs: lakehouse/tiktok_users/ (bronze/events, bronze/quarantine, bronze/ingest_log)"

test: setup
	$(BIN)/python -m pytest tests

bench: setup
	$(BIN)/python bench/bench_synth.py

clean:
	rm -rf $(VENV) lakehouse data/demo spark-warehouse metastore_db
