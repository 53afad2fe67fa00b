"""Checking what a model directory (or hub id) holds before building anything from it.

Why: `from_pretrained` on a directory of another architecture does not fail fast: a SAM2
directory passed as the policy was read as a default-sized Qwen (80 layers) and grew to 19.7 GB
before the kernel killed it. `check_model_type` reads only `config.json` (for a LoRA run
directory, the base model's named in `adapter_config.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

QWEN2_5_VL_TYPES = ("qwen2_5_vl",)  # policies: backbones.POLICY_TYPES
# the families vLLM generation is wired and tested for (tests_vllm: prompts, weight pushes, hf == vllm outputs)
VLLM_POLICY_TYPES = ("qwen2_5_vl", "qwen3_vl")
VLLM_FAMILIES = "Qwen2.5-VL and Qwen3-VL (dense)"
SAM2_TYPES = ("sam2", "sam2_video")


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as err:
        raise ValueError(f"{path}: unreadable {what} ({type(err).__name__})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: {what} is not a JSON object")
    return data


def model_config(source: str) -> dict:
    """A model's `config.json` as a dict: a local directory (a LoRA run directory: its base model's), or a hub id
    (read through the hub cache / network: OSError when offline and not cached)."""
    path = Path(source)
    if path.is_dir():
        if not (path / "config.json").is_file() and (path / "adapter_config.json").is_file():
            base = _read_json(path / "adapter_config.json", "adapter config").get("base_model_name_or_path")
            if not base:
                raise ValueError(f"{path}/adapter_config.json: no base_model_name_or_path")
            return model_config(base)
        if not (path / "config.json").is_file():
            raise ValueError(f"{path}: no config.json (not a transformers model directory)")
        return _read_json(path / "config.json", "model config")
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(source)
    return config


def model_type(source: str) -> str | None:
    """`model_type` from a model's config (`model_config`); None if the config names none."""
    return model_config(source).get("model_type")


def check_model_type(source: str, expected: tuple[str, ...], role: str) -> None:
    """Raise a one-line ValueError unless `source` is a model of one of the `expected` types."""
    found = model_type(source)
    if found not in expected:
        raise ValueError(f"{source}: a {found or 'untyped'} model, but the {role} must be {' or '.join(expected)}")
