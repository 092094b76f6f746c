# Set-up is part of every target: a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup prometheus demo test test-unit lint bench bench-vision bench-sensors bench-peers bench-workers bench-latency bench-low-load kafka-up kafka-down clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "Vigil needs Python >= 3.11; found $$($(PYTHON) --version 2>&1)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	# uv keeps its wheel cache in ~/.cache/uv: reinstalls (torch included) take seconds.
	$(BIN)/uv pip install --python $(BIN)/python -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

prometheus:
	@bash deploy/ensure-prometheus.sh

demo: setup
	$(BIN)/vigil demo

# The runtime, sink, observability and fault tests run once more on the confluent-kafka client.
CONFLUENT_TESTS := tests/integration/test_runtime.py tests/integration/test_sinks.py \
	tests/integration/test_observability.py tests/integration/test_webhook.py tests/faults

test: setup prometheus
	$(BIN)/pytest
	VIGIL_TEST_KAFKA_CLIENT=confluent $(BIN)/pytest $(CONFLUENT_TESTS)

test-unit: setup
	$(BIN)/pytest tests/unit

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: setup
	$(BIN)/python bench/foundation.py

bench-vision: setup
	$(BIN)/python bench/vision.py
	$(BIN)/python bench/vision_models.py

bench-sensors: setup
	$(BIN)/python bench/sensors.py

# The Quix Streams peer runs in an environment of its own: it pins other pydantic and
# confluent-kafka versions than Vigil's.
.venv-quix/.installed: bench/peers-requirements.txt | $(STAMP)
	$(BIN)/uv venv -q --python $(PYTHON) .venv-quix
	$(BIN)/uv pip install -q --python .venv-quix/bin/python -r bench/peers-requirements.txt
	touch $@

bench-peers: setup .venv-quix/.installed
	$(BIN)/python bench/peers.py

bench-workers: setup
	$(BIN)/python bench/workers.py

bench-latency: setup
	$(BIN)/python bench/latency.py

bench-low-load: setup
	$(BIN)/python bench/low_load.py

kafka-up: setup
	$(BIN)/vigil kafka up

kafka-down: setup
	$(BIN)/vigil kafka down

clean:
	rm -rf $(VENV) .venv-quix .pytest_cache .mypy_cache .ruff_cache bench/results
