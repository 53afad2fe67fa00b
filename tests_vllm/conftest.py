"""Fixtures for the vLLM tests (`make test-vllm`, in the `.venv-vllm` venv that `make vllm-venv` builds).

vLLM's CPU backend supports attention head sizes 32, 64, 80, ... (not the main suite's 16), so the tiny policy
here is 128 wide (4 heads of 32). Every vLLM engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`,
as in TRL's colocate mode) with a 1 GiB KV cache."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB
os.environ.setdefault("VLLM_CPU_CI_ENV", "1")  # vLLM's own CPU-CI switch: dynamo + eager, no inductor compile

import functools  # noqa: E402

import pytest  # noqa: E402

vllm = pytest.importorskip("vllm", reason="the vLLM tests run in the venv `make vllm-venv` builds")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from socioreasoner.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny128"), seed=0, hidden_size=128)


@pytest.fixture(scope="session")
def toy_city(tmp_path_factory):
    from socioreasoner.data.synthetic import generate_toy_city

    return generate_toy_city(tmp_path_factory.mktemp("toy"), num_samples=4, seed=0,
                             splits=("train", "val"), size=160, progress=False)


@pytest.fixture(scope="session")
def sft_policy(tiny_models, toy_city, tmp_path_factory):
    """The tiny policy warm-started on the answer format (as the main suite's), so GRPO sees rewards that vary.
    At this width the main suite's learning rate (1e-2) left it babbling; 3e-3 gives well-formed answers."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.pipeline import PromptSettings
    from socioreasoner.prompts import PROMPT_STYLES
    from socioreasoner.sft import run_sft, sft_examples

    stage1, stage2 = PROMPT_STYLES["descriptive"]
    settings = PromptSettings(stage1, stage2, max_pixels=50176)
    examples = sft_examples(load_socioseg(str(toy_city), "train"), settings, stages=(1,))
    return run_sft(str(tiny_models["qwen2_5_vl"]), examples, str(tmp_path_factory.mktemp("sft")), max_steps=100,
                   learning_rate=3e-3, settings=settings)


@pytest.fixture(scope="session")
def fp32_engine():
    """TRL's `LLM(...)` call with float32 and eager execution added (see the module docstring)."""
    import trl.generation.vllm_generation as trl_vllm

    original = trl_vllm.LLM
    trl_vllm.LLM = functools.partial(original, dtype="float32", enforce_eager=True)
    yield
    trl_vllm.LLM = original
