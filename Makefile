# `make run` and `make test` set everything up on first use (.venv from pyproject.toml).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-slow data bench compare bench-morph bench-sweep reproduce-quick morph-vs-fixed neumeta-widths neumeta-class-il paths install clean

install: $(STAMP)

# constraints.txt pins every transitive dependency to the versions the tests ran against.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[dev]'
	touch $(STAMP)

data:
	@bash scripts/install_data.sh

run: $(STAMP) data
	$(BIN)/neumeta-cl experiment quickstart

# The default suite, then the reviewer's quick Table 1 check in a fresh folder (about 4 minutes),
# removed when the check passes and kept for inspection when it fails.
test: $(STAMP) data
	$(BIN)/pytest
	out=$$(mktemp -d) && $(BIN)/neumeta-cl reproduce table1 --quick --check --out "$$out" && rm -rf "$$out"

test-slow: $(STAMP) data
	$(BIN)/pytest -m slow

bench: $(STAMP) data
	$(BIN)/python scripts/bench_loop.py

compare: $(STAMP) data
	$(BIN)/python scripts/compare_avalanche.py

bench-morph: $(STAMP) data
	$(BIN)/python scripts/bench_morph.py

bench-sweep: $(STAMP) data
	$(BIN)/python scripts/bench_sweep.py

reproduce-quick: $(STAMP) data
	$(BIN)/neumeta-cl reproduce table1 --quick --check

morph-vs-fixed: $(STAMP) data
	$(BIN)/python scripts/morph_vs_fixed.py

neumeta-widths: $(STAMP) data
	$(BIN)/python scripts/neumeta_widths.py

neumeta-class-il: $(STAMP) data
	$(BIN)/python scripts/neumeta_class_il.py

paths: $(STAMP) data
	$(BIN)/python scripts/paths.py

clean:
	rm -rf runs wandb .pytest_cache
