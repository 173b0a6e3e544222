# Set-up and everyday commands. Everything installs into .venv inside the repository.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test lint bench clean

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed-base
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(BIN)/python -m pip install -q -e '.[test,bench]'
	touch $@

## serve: set up, then start the purifying proxy on the built-in model and default chain
serve: $(VENV)/.installed-base
	$(BIN)/fencebox serve --host $(HOST) --port $(PORT) $(ARGS)

## test: set up, then lint, type-check and run the whole test suite; the Ray tests (marked `ray`) run
## inside a loopback-only network namespace (unshare -n, needs root); without root they are skipped loudly
test: $(VENV)/.installed-test lint
	@if [ ! -x "$${FENCEBOX_CHROMIUM:-/usr/bin/chromium}" ] && ! command -v chromium >/dev/null 2>&1; then \
	  echo "!!!!!!!!!! NO CHROMIUM FOUND: the /ui browser tests will be SKIPPED (apt-get install chromium) !!!!!!!!!!"; fi
	$(BIN)/python -m pytest -q -m "not ray" $(PYTEST_ARGS)
	PYTHON=$(BIN)/python scripts/run_ray_tests.sh -q $(PYTEST_ARGS)

lint: $(VENV)/.installed-test
	$(BIN)/ruff check fencebox tests benchmarks scripts
	$(BIN)/ruff format --check fencebox tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports

## bench: set up with the bench extra (IBM ART) and run every benchmark script
bench: $(VENV)/.installed-bench
	for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
