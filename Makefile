# socioreasoner — developer commands. `make test` is the README's (and CI's) test command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast lint demo tiny toy-data eval eval-toy clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	# torch first and pinned: on CPU machines this is the local CPU wheel; an unpinned
	# torch (or a wider range asked for by another package) pulls a multi-GB CUDA build.
	$(BIN)/pip install torch==2.13.0
	$(BIN)/pip install -e ".[dev]"
	# Qwen's real BPE ranks (qwen.tiktoken), from the dashscope wheel on PyPI, into the cache
	$(BIN)/python -c "from socioreasoner.qwen_tokenizer import qwen_tiktoken_path as p; print(p())"

install: $(BIN)/activate

test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

test-fast: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m socioreasoner.demo --out runs/demo $(ARGS)

lint: install
	$(BIN)/ruff check socioreasoner tests benchmarks recipes

tiny: install
	$(BIN)/python -m socioreasoner.tiny --out runs/tiny

toy-data: install
	$(BIN)/python -m socioreasoner.data.synthetic --out runs/toy_city --num-samples 64 --seed 0

eval: install
	$(BIN)/python -m socioreasoner.evaluate --config recipes/eval.yaml $(ARGS)

runs/tiny/sam2: | $(BIN)/activate
	$(BIN)/python -m socioreasoner.tiny --out runs/tiny

runs/toy_city/val: | $(BIN)/activate
	$(BIN)/python -m socioreasoner.data.synthetic --out runs/toy_city --num-samples 32 --seed 0

eval-toy: install runs/tiny/sam2 runs/toy_city/val
	$(BIN)/python -m socioreasoner.evaluate --config recipes/eval_toy.yaml $(ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
