"""Shared fixtures: tiny models of the real architectures and a small toy city, built offline once."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    from socioreasoner.tiny import build_tiny_models

    return build_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="session")
def toy_city(tmp_path_factory):
    from socioreasoner.data.synthetic import generate_toy_city

    return generate_toy_city(tmp_path_factory.mktemp("toy"), num_samples=4, seed=0,
                             splits=("train", "val"), size=160, progress=False)


@pytest.fixture(scope="session")
def sft_policy(tiny_models, toy_city, tmp_path_factory):
    """A tiny policy warm-started on the answer format, so GRPO sees rewards that vary.

    It is taught with the descriptive prompt pair (saved with it, so training and evaluation use it too): the
    100-step budget below was sized for it, and with the reference pair a 2-layer random policy's sampled
    completions all earned the same reward in the first GRPO steps (reward_std 0). The reference prompts are
    tested by their own tests (exact text, chat-template rendering, predict/evaluate defaults)."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.pipeline import PromptSettings
    from socioreasoner.prompts import PROMPT_STYLES
    from socioreasoner.sft import run_sft, sft_examples

    stage1, stage2 = PROMPT_STYLES["descriptive"]
    settings = PromptSettings(stage1, stage2, max_pixels=50176)
    # stage-1 targets only, 100 steps: a margin over the ~60 at which sampled completions start to follow the format
    examples = sft_examples(load_socioseg(str(toy_city), "train"), settings, stages=(1,))
    return run_sft(str(tiny_models["qwen2_5_vl"]), examples, str(tmp_path_factory.mktemp("sft")), max_steps=100,
                   learning_rate=1e-2, settings=settings)


@pytest.fixture(scope="session")
def train_script():
    """`recipes/train.py` imported as a module (it is a script, not part of the package)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).parents[1] / "recipes" / "train.py"
    spec = importlib.util.spec_from_file_location("train_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_script"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
