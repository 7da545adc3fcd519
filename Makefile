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
	$(BIN)/python -c "from aed_tf.runner import ensure_kernel; ensure_kernel()"  # Jupyter kernel "aed-tf"
	touch $@

# Debian's headless Chromium: the tests screenshot the HTML report and drive the web demo with it.
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -q && apt-get install -y -q --no-install-recommends chromium

# The main job: explore -> train -> evaluate through papermill: the recommended CPU setting
# (aed_tf.config.CPU_SETTING) on cv fold 1 of both shared folders (its speakers never heard in
# training), rendered to reports/<run-id>/*.html and reports/index.html. On 6 epochs, not the
# setting's 30: 8 min 21 s on a 2-core EPYC with an empty cache (every clip decoded, its eGeMAPS
# functionals computed, most of them while the network trains), 6 to 7 minutes everything cached.
DEMO_PARAMETERS := -p protocol cv -p fold 1 -p backbone audiocnn -p weights none -p epochs 6 -p learning_rate 0.003 -p normalization speaker -p balance corpus_class_weights -p fusion egemaps
demo: $(BIN)/.installed
	$(BIN)/aed-tf run all $(DEMO_PARAMETERS)

test: $(BIN)/.installed $(CHROMIUM)
	$(BIN)/ruff check aed_tf tests
	$(BIN)/ruff format --check aed_tf tests
	$(BIN)/python -m pytest

bench: $(BIN)/.installed
	$(BIN)/aed-tf bench pipeline

clean:
	rm -rf $(VENV) prepared .pytest_cache .hypothesis
