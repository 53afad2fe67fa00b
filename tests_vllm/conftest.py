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


from socioreasoner import testing  # noqa: E402  (the main suite's builders, at vLLM's width)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return testing.tiny_models(tmp_path_factory.mktemp("tiny128"), hidden_size=testing.VLLM_HIDDEN_SIZE)


@pytest.fixture(scope="session")
def tiny_qwen3_vl(tmp_path_factory):
    """The tiny Qwen3-VL at vLLM's width (its head_dim is 32 at any width)."""
    return testing.tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"), ("qwen3_vl",),
                              hidden_size=testing.VLLM_HIDDEN_SIZE)["qwen3_vl"]


@pytest.fixture(scope="session")
def toy_city(tmp_path_factory):
    return testing.toy_city(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def sft_policy(tiny_models, toy_city, tmp_path_factory):
    """The tiny policy warm-started on the answer format (as the main suite's), so GRPO sees rewards that vary.
    At this width the main suite's learning rate (1e-2) left it babbling; 3e-3 gives well-formed answers."""
    return testing.sft_policy(tiny_models["qwen2_5_vl"], toy_city, tmp_path_factory.mktemp("sft"),
                              learning_rate=3e-3)


@pytest.fixture(scope="session")
def fp32_engine():
    """TRL's `LLM(...)` call with float32 and eager execution added (see the module docstring)."""
    import trl.generation.vllm_generation as trl_vllm

    original = trl_vllm.LLM
    trl_vllm.LLM = functools.partial(original, dtype="float32", enforce_eager=True)
    yield
    trl_vllm.LLM = original
