# trackhouse: `make demo` loads the bundled samples, `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
LOGS ?= data/samples
WAREHOUSE ?= data/warehouse

.PHONY: install demo test ui samples bench bench-smoke clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $(INSTALLED)

install: $(INSTALLED)

demo: $(INSTALLED)
	$(BIN)/etl run --logs $(LOGS) --warehouse $(WAREHOUSE)

test: $(INSTALLED)
	$(BIN)/pytest

ui: $(INSTALLED)
	mkdir -p dagster_home
	TRACKHOUSE_LOGS=$(abspath $(LOGS)) TRACKHOUSE_WAREHOUSE=$(abspath $(WAREHOUSE)) DAGSTER_HOME=$(abspath dagster_home) \
		$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -m dagster_project.definitions

samples: $(INSTALLED)
	$(BIN)/python scripts/make_samples.py

clean:
	rm -rf $(WAREHOUSE) .pytest_cache

# Benchmark (bench/run.py): `make bench` writes bench/results.md (roughly 30-60 min on 2 cores);
# `make bench-smoke` is a 10k-event check under a minute. Extra options: BENCH_ARGS="--sizes 250000 --repeat 1".
bench: $(INSTALLED)
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-smoke: $(INSTALLED)
	$(BIN)/python bench/run.py --smoke $(BENCH_ARGS)
