# Two commands for a fresh machine:
#   make app    install what is missing, then start the app (python -m app) on the bundled sample data
#   make test   install what is missing, then run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: app test sample bench clean chromium gpu-check

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# the CPU build of torch first: a bare "torch" would pull a multi-GB CUDA build
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[test]"
	touch $(STAMP)

app: $(STAMP)
	$(BIN)/python -m app --server.headless true

# the browser tests need Debian's Chromium; installed here when running as root
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the browser tests will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

sample: $(STAMP)
	$(BIN)/python -m engine generate --preset sample --out sample_data

bench: $(STAMP)
	$(BIN)/python -m engine bench

# on a machine with one NVIDIA GPU (engine/bench/gpu_check.py; about 5 minutes after the installs):
# a venv of its own with torch's CUDA build and the CuPy of torch's CUDA major (its CUDA libraries from
# PyPI), then the CUDA tests on the device, the GPU benchmark, peak memory and the sample trained on
# GPU and CPU, written into engine/cuda/REPORT.md. Without a GPU: exit 2, one line saying why.
gpu-check:
	@test -f .venv-gpu/.installed || { $(PYTHON) -m venv .venv-gpu && \
		.venv-gpu/bin/pip install -q --upgrade pip && \
		.venv-gpu/bin/pip install -q torch==2.13.0 && \
		.venv-gpu/bin/pip install -q "cupy-cuda$$(.venv-gpu/bin/python -c 'import torch; print(torch.version.cuda.split(".")[0])')x[ctk]" && \
		.venv-gpu/bin/pip install -q -e ".[test]" && touch .venv-gpu/.installed; }
	.venv-gpu/bin/python -m engine.bench.gpu_check

clean:
	rm -rf $(VENV) runs
