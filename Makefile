# Two commands on a fresh machine: `make demo` and `make test`. Everything else is a step of those.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= data/demo
DEMO_EVENTS ?= 300000

.PHONY: setup browser demo demo-text demo-rfm test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,text]'
	touch $(STAMP)

# Installs the package and fetches the Delta jars once into ~/.cache/seglake (offline afterwards).
setup: $(STAMP)
	$(BIN)/seglake setup

LAKEHOUSE := $(CURDIR)/lakehouse
RUN := SEGLAKE_EVENTS=$(CURDIR)/$(DEMO_DIR)/events SEGLAKE_LAKEHOUSE=$(LAKEHOUSE) $(BIN)/seglake run --run-id demo

# Synthetic logs → every stage for users; the real profiles table; the claims classifier.
demo: setup
	$(BIN)/seglake synth --events $(DEMO_EVENTS) --out $(DEMO_DIR) --corrupt-rate 0.01 --seed 7
	$(RUN) --config conf/tiktok_users.yaml
	$(RUN) --config conf/tiktok_profiles.yaml
	$(RUN) --config conf/tiktok_claims.yaml
	$(RUN) --config conf/movielens.yaml
	@echo
	@echo "outputs (Delta tables under $(LAKEHOUSE)/<use case>/):"
	@echo "  tiktok_users    bronze/{events,quarantine,ingest_log} silver/entities gold/{sweep,runs,segments,profiles,segment_stability,clusters,cluster_quality,cluster_stability,density_sweep,explanations,descriptions} models/demo/"
	@echo "  tiktok_profiles silver/entities gold/... models/demo/"
	@echo "  tiktok_claims   bronze/quarantine gold/classifier_metrics models/demo/classifier/"
	@echo "  movielens       bronze/{ratings,users,items,quarantine} silver/entities gold/{als_metrics,sweep,segments,top_titles,segment_demographics,genre_preference,block_variance,assignments,assigner_metrics} models/demo/assigner/"
	@echo "reports: $(LAKEHOUSE)/tiktok_users/reports/demo/index.html  $(LAKEHOUSE)/tiktok_profiles/reports/demo/index.html  $(LAKEHOUSE)/movielens/reports/demo/index.html"

# Text clusters (needs the [text] extra that setup installs): profile bios, then claim transcripts
# by claim status (15k texts through MiniLM on 2 cores: minutes, not seconds).
demo-text: setup
	$(RUN) --config conf/tiktok_bios.yaml
	$(RUN) --config conf/tiktok_hashtags.yaml
	@echo "outputs: $(LAKEHOUSE)/tiktok_bios/gold/{text_clusters,text_keywords,text_sweep} and the same under tiktok_hashtags/"
	@echo "reports: $(LAKEHOUSE)/tiktok_bios/reports/demo/index.html  $(LAKEHOUSE)/tiktok_hashtags/reports/demo/index.html"

# A synthetic purchase log with four planted RFM archetypes → every stage of conf/rfm.yaml (recency,
# frequency, monetary, tenure). Its own target: a few minutes on 2 busy cores, too long for `demo`.
RFM_DIR ?= data/rfm
RFM_CUSTOMERS ?= 3000
demo-rfm: setup
	$(BIN)/seglake synth --log purchases --customers $(RFM_CUSTOMERS) --out $(RFM_DIR) --seed 7
	SEGLAKE_EVENTS=$(CURDIR)/$(RFM_DIR)/events SEGLAKE_LAKEHOUSE=$(LAKEHOUSE) $(BIN)/seglake run --run-id demo --config conf/rfm.yaml
	@echo "outputs: $(LAKEHOUSE)/rfm/silver/entities gold/{sweep,runs,segments,profiles,clusters,explanations,descriptions}; truth: $(RFM_DIR)/truth/customers.csv"
	@echo "report: $(LAKEHOUSE)/rfm/reports/demo/index.html"

# The report test opens reports in Debian's headless Chromium; install it once if it is missing.
browser:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium >/dev/null) || echo "warning: could not install chromium (needs root and Debian's packages)"

# The tests, plus the examples in the docstrings of lib/seglake (they share the tests' one SparkSession,
# given to them as `spark` by the root conftest.py: run them with pytest, not `python -m doctest`).
# Two workers (pytest-xdist), each taking a whole test file at a time so that a module's fixtures (a
# pipeline run, often) are built once: much of a test's time is JVM start-up, subprocesses and
# single-threaded UMAP, which the other worker's Spark jobs overlap. The cluster and fault tests'
# shared input and reference run are built once for both workers (tests/standalone.py).
# `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= 2
test: setup browser
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --doctest-modules --durations=40 lib/seglake tests

# Synthetic events through every users stage beside DuckDB and the seed's pandas way, then whole runs
# at a user's first sizes (the demo's users, the profiles table, the MovieLens sweep); each appends a
# dated section to BENCHMARKS.md. Add 100M with `make bench BENCH_SIZES=1M,10M,100M` (see BENCHMARKS.md).
BENCH_SIZES ?= 1M,10M
bench: setup
	BENCH_SIZES=$(BENCH_SIZES) $(BIN)/python bench/bench_pipeline.py
	$(BIN)/python bench/bench_runs.py

clean:
	rm -rf $(VENV) lakehouse data/demo data/rfm spark-warehouse metastore_db
