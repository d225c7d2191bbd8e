# bilstm-cli tasks. `make` alone lists them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEMO   := fixtures/k3_seq_input_lstm_concat.keras
DEMO_DONOR := fixtures/k2_seq_lstm.h5
OUT    := build

.DEFAULT_GOAL := help
.PHONY: help install demo test test-fast test-oracle fixtures bench lint fuzz clean chromium

help: ## List the tasks
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Byte-compile the package once: with PYTHONDONTWRITEBYTECODE set, every run would compile it again.
# The editable install is a plain path entry (compat mode): the default one installs an import
# hook that every Python process, bilstm included, spends about 25 ms loading at start-up. A
# setuptools without compat mode gets the default one.
EDITABLE = --config-settings editable_mode=compat
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(EDITABLE) -e . || $(BIN)/pip install --quiet -e .
	$(BIN)/python -m compileall -q bilstm_cli
	@touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet $(EDITABLE) -e '.[test]' || $(BIN)/pip install --quiet -e '.[test]'
	$(BIN)/python -m compileall -q bilstm_cli
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed ## Create .venv and install the tool (numpy, h5py, click, rich)

demo: $(VENV)/.installed ## Install, then run the tool on a model shipped in fixtures/
	@mkdir -p $(OUT)
	@echo '$$ bilstm inspect $(DEMO) --gates'
	@$(BIN)/bilstm inspect $(DEMO) --gates
	@echo
	@echo '$$ bilstm init $(DEMO) -o $(OUT)/reseeded.keras --init kernel=glorot_uniform --init recurrent_kernel=orthogonal --init bias=zeros --init "bias[f]=ones" --seed 7 --force'
	@$(BIN)/bilstm init $(DEMO) -o $(OUT)/reseeded.keras --init kernel=glorot_uniform \
		--init recurrent_kernel=orthogonal --init bias=zeros --init 'bias[f]=ones' --seed 7 --force
	@echo
	@echo '$$ bilstm transplant $(DEMO_DONOR) $(OUT)/reseeded.keras -o $(OUT)/transplanted.keras --force   # Keras 2 .h5 into a Keras 3 .keras'
	@$(BIN)/bilstm transplant $(DEMO_DONOR) $(OUT)/reseeded.keras -o $(OUT)/transplanted.keras --force
	@echo
	@echo '$$ bilstm diff $(DEMO_DONOR) $(OUT)/transplanted.keras'
	@$(BIN)/bilstm diff $(DEMO_DONOR) $(OUT)/transplanted.keras

# The HTML report of `check` is tested in headless Chromium. Installed with apt-get when it is
# missing and apt-get can (as root, or through sudo); otherwise that test is skipped, saying why.
chromium: ## Install Chromium for the report's browser test when missing (never fails)
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
		SUDO=; [ "$$(id -u)" = 0 ] || SUDO="sudo -n"; \
		command -v apt-get >/dev/null 2>&1 \
		&& { $$SUDO apt-get install -y -q chromium >/dev/null 2>&1 \
		     || { $$SUDO apt-get update -q >/dev/null 2>&1 && $$SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; } \
		|| echo "note: chromium could not be installed; the report's browser test will be skipped"; }

test: $(VENV)/.installed-test chromium ## Install with test dependencies, then run the whole suite
	$(BIN)/python -m pytest -q

test-fast: $(VENV)/.installed-test chromium ## Only the tests that do not import TensorFlow
	$(BIN)/python -m pytest -q -m 'not keras'

test-oracle: $(VENV)/.installed-test ## Only the tests that compare with real Keras
	$(BIN)/python -m pytest -q -m keras

fixtures: $(VENV)/.installed-test ## Regenerate the fixture models and their manifest with real Keras
	$(BIN)/python fixtures/generate.py

# The baseline, bench/keras_way.py, is part of the repository. A missed target is reported, not
# failed. BENCH_ARGS passes options on, e.g. make bench BENCH_ARGS='--rounds 1 --jobs init'.
BENCH_ARGS ?=
bench: $(VENV)/.installed-test ## Time bilstm against bench/keras_way.py on a generated 57 MiB model; reports missed targets
	$(BIN)/python -m compileall -q bilstm_cli
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Every registered mutator (tests/fuzzing.py) over every fixture of its format; each worker runs
# under an address-space limit and each command under a timeout. FUZZ_ARGS passes options on.
FUZZ_ARGS ?=
fuzz: $(VENV)/.installed-test ## Long fuzzing run: thousands of damaged files through every command, bounded per case
	$(BIN)/python bench/fuzz.py $(FUZZ_ARGS)

lint: $(VENV)/.installed-test ## ruff lint and format check, mypy --strict on the package
	$(BIN)/ruff check bilstm_cli tests bench fixtures
	$(BIN)/ruff format --check bilstm_cli
	$(BIN)/mypy

clean: ## Remove the environment and generated files
	rm -rf $(VENV) $(OUT) bench/out .pytest_cache .hypothesis
