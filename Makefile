# SIPSTACK Connector for Asterisk
#   make demo   - set up, then run the real agent against a simulated SQLite PBX and a local receiver
#   make test   - set up, start the databases (and install headless chromium), run the static
#                 gates and the whole test suite (browser screenshots land in .artifacts/web/)
#   make lint   - the static gates alone (ruff, format, mypy, import contracts)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYPATH := PYTHONPATH=agent:operator
# pytest-xdist workers for `make test` (one test file per worker at a time: the e2e tests
# mostly wait on real databases and processes, so 3 workers fit 2 cores); 0 = in-process
TEST_WORKERS ?= 3

.PHONY: all venv lint test test-fast demo bench helm clean format

all: test

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PYPATH) $(BIN)/mypy
	$(PYPATH) $(BIN)/lint-imports

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP)
	tools/ensure-databases.sh
	tools/fetch-helm.sh
	tools/ensure-chromium.sh
	$(MAKE) --no-print-directory lint
	rm -f .coverage .coverage.*
	$(PYPATH) $(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --cov --cov-report= $(PYTEST_ARGS)
	$(BIN)/coverage combine -q 2>/dev/null || true
	@echo "== coverage: pure core (floor 85%) =="
	$(BIN)/coverage report --include='*/sipstack_agent/model.py,*/sipstack_agent/calls/*,*/sipstack_operator/render.py' --fail-under=85 --skip-covered
	@echo "== coverage: overall (floor 75%) =="
	$(BIN)/coverage report --fail-under=75 --skip-covered

test-fast: $(STAMP)
	$(PYPATH) $(BIN)/python -m pytest -x -q -m "not slow" $(PYTEST_ARGS)

demo: $(STAMP)
	$(BIN)/sipstack-agent demo --calls 60 --rate 5

SOAK_MINUTES ?= 20

bench: $(STAMP)
	tools/ensure-databases.sh
	$(BIN)/python bench/throughput.py
	$(BIN)/python bench/backlog.py
	$(BIN)/python bench/outage.py
	$(BIN)/python bench/latency.py
	$(BIN)/python bench/idle.py
	$(BIN)/python bench/state_store.py
	$(BIN)/python bench/double_write.py
	$(BIN)/python bench/evaluator.py
	$(BIN)/python bench/transport.py
	$(BIN)/python bench/csv_throughput.py
	$(BIN)/python bench/ami_throughput.py
	$(BIN)/python bench/soak.py --minutes $(SOAK_MINUTES)
	$(BIN)/python bench/operator_reconcile.py

clean:
	rm -rf $(VENV) .tools .coverage .coverage.* .pytest_cache .mypy_cache .ruff_cache build *.egg-info
