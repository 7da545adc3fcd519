# `make demo` and `make test` work on a fresh machine: both create .venv when it is missing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: demo test bench prepare clean

$(BIN)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt -e '.[test]'
	touch $@

# The main job: prepare the data, then measure the input pipeline.
demo: $(BIN)/.installed
	$(BIN)/aed-tf prepare
	$(BIN)/aed-tf bench pipeline

test: $(BIN)/.installed
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/aed-tf bench pipeline

clean:
	rm -rf $(VENV) prepared .pytest_cache .hypothesis
