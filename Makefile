# Set-up is part of every target: a fresh clone needs nothing but `make demo` or `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup prometheus demo test test-drills test-all test-unit lint bench bench-vision bench-sensors bench-sensor-latency bench-serving-cost bench-peers bench-peers-env bench-decoding bench-workers bench-latency bench-low-load bench-load-latency kafka-up kafka-down clean

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

# make test: everything but the slow drills on the default client (confluent-kafka), and the
# client contract (runtime, sinks) once more on kafka-python. make test-drills: the fault drills
# and slow tests, and the observability, webhook and fault tests on kafka-python. CI runs both.
CLIENT_CONTRACT_TESTS := tests/integration/test_runtime.py tests/integration/test_sinks.py
OTHER_CLIENT_DRILLS := tests/integration/test_observability.py tests/integration/test_webhook.py tests/faults

test: setup prometheus
	$(BIN)/pytest -m "not faults and not slow"
	VIGIL_TEST_KAFKA_CLIENT=kafka-python $(BIN)/pytest $(CLIENT_CONTRACT_TESTS)

test-drills: setup prometheus
	$(BIN)/pytest -m "faults or slow"
	VIGIL_TEST_KAFKA_CLIENT=kafka-python $(BIN)/pytest $(OTHER_CLIENT_DRILLS)

test-all: test test-drills

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

bench-sensors: setup .venv-quix/.installed
	$(BIN)/python bench/sensors.py

bench-sensor-latency: setup
	$(BIN)/python bench/sensor_latency.py

bench-serving-cost: setup
	$(BIN)/python bench/serving_cost.py

# The Quix Streams peers run in an environment of its own: Quix pins other pydantic and
# confluent-kafka versions than Vigil's. torch and its kin are held at Vigil's versions (from
# uv's cache: no second download), so both sides run the same model code.
.venv-quix/.installed: bench/peers-requirements.txt | $(STAMP)
	$(BIN)/uv venv -q --python $(PYTHON) .venv-quix
	$(BIN)/uv pip freeze --python $(BIN)/python | grep -E '^(torch|torchvision|numpy|safetensors)==' > .venv-quix/vigil-versions.txt
	$(BIN)/uv pip install -q --python .venv-quix/bin/python -r bench/peers-requirements.txt -c .venv-quix/vigil-versions.txt
	touch $@

bench-peers-env: .venv-quix/.installed

bench-peers: setup .venv-quix/.installed
	$(BIN)/python bench/peers.py

# msgspec and orjson are measured against pydantic, never used by Vigil: bench only.
bench-decoding: setup
	$(BIN)/uv pip install -q --python $(BIN)/python msgspec orjson
	$(BIN)/python bench/decoding.py

bench-workers: setup
	$(BIN)/python bench/workers.py

bench-latency: setup
	$(BIN)/python bench/latency.py

bench-low-load: setup
	$(BIN)/python bench/low_load.py --seconds 60

bench-load-latency: setup
	$(BIN)/python bench/load_latency.py --shares 0.5,0.25,0.001

kafka-up: setup
	$(BIN)/vigil kafka up

kafka-down: setup
	$(BIN)/vigil kafka down

clean:
	rm -rf $(VENV) .venv-quix .pytest_cache .mypy_cache .ruff_cache bench/results
