"""Shared fixtures: tiny models of the real architectures and a small toy city, built offline once."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402

from socioreasoner import testing  # noqa: E402  (the builders tests_vllm's fixtures share)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return testing.tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def toy_city(tmp_path_factory):
    return testing.toy_city(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def sft_policy(tiny_models, toy_city, tmp_path_factory):
    """A tiny policy warm-started on the answer format, so GRPO sees rewards that vary (`testing.sft_policy`)."""
    return testing.sft_policy(tiny_models["qwen2_5_vl"], toy_city, tmp_path_factory.mktemp("sft"))


@pytest.fixture(scope="session")
def train_script():
    """`recipes/train.py` imported as a module (it is a script, not part of the package)."""
    return testing.train_script()
