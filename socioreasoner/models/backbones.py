"""The policy backbones: which transformers class loads a model, which processor goes with it, and the
coordinate frame its grounding answers are written in — all chosen from the model's `model_type`.

| family      | model types               | class                               | coordinates      | resize factor |
|-------------|---------------------------|-------------------------------------|------------------|---------------|
| Qwen2.5-VL  | qwen2_5_vl                | Qwen2_5_VLForConditionalGeneration  | absolute pixels  | 28 (14 × 2)   |
| Qwen3-VL    | qwen3_vl, qwen3_vl_moe    | Qwen3VL(Moe)ForConditionalGeneration| relative 0–1000  | 32 (16 × 2)   |
| Qwen3.5     | qwen3_5, qwen3_5_moe      | Qwen3_5(Moe)ForConditionalGeneration| relative 0–1000  | 32 (16 × 2)   |

The resize factor is read from the model's own vision config (patch size × spatial merge), the frame from
the family; a recipe or CLI may override the frame (`coord_frame`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from socioreasoner.method.frame import ABSOLUTE, QWEN_FACTOR, RELATIVE1000, check_coord_frame
from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.method.prompts import load_prompt_templates
from socioreasoner.models.model_types import check_model_type, model_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    family: str
    model_class: str       # transformers class name
    processor_class: str   # transformers processor class name (we build it image-only: `qwen_processor`)
    coord_frame: str


BACKBONES = {
    "qwen2_5_vl": Backbone("Qwen2.5-VL", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor", ABSOLUTE),
    "qwen3_vl": Backbone("Qwen3-VL", "Qwen3VLForConditionalGeneration", "Qwen3VLProcessor", RELATIVE1000),
    "qwen3_vl_moe": Backbone("Qwen3-VL", "Qwen3VLMoeForConditionalGeneration", "Qwen3VLProcessor", RELATIVE1000),
    "qwen3_5": Backbone("Qwen3.5", "Qwen3_5ForConditionalGeneration", "Qwen3VLProcessor", RELATIVE1000),
    "qwen3_5_moe": Backbone("Qwen3.5", "Qwen3_5MoeForConditionalGeneration", "Qwen3VLProcessor", RELATIVE1000),
}
POLICY_TYPES = tuple(BACKBONES)


def backbone_for_type(model_type: str | None, where: str = "policy") -> Backbone:
    if model_type not in BACKBONES:
        raise ValueError(f"{where}: a {model_type or 'untyped'} model; supported policies: {', '.join(POLICY_TYPES)}")
    return BACKBONES[model_type]


def _as_dict(config) -> dict:
    return config if isinstance(config, dict) else config.to_dict()


def frame_of_config(config) -> dict:
    """{"coord_frame", "resize_factor"} of a model config (a transformers config or its dict)."""
    config = _as_dict(config)
    backbone = backbone_for_type(config.get("model_type"))
    vision = config.get("vision_config") or {}
    patch, merge = vision.get("patch_size"), vision.get("spatial_merge_size")
    factor = int(patch) * int(merge) if isinstance(patch, int) and isinstance(merge, int) else QWEN_FACTOR
    return {"coord_frame": backbone.coord_frame, "resize_factor": factor}


def frame_of_model(source: str) -> dict | None:
    """`frame_of_config` of a model directory or hub id; None when its config cannot be read (an offline hub id, a
    directory without one) or is not a policy's: loading the model then says what is wrong, in one line."""
    try:
        return frame_of_config(model_config(source))
    except (OSError, ValueError) as err:
        logger.debug("%s: config unreadable (%s); default coordinate frame", source, err)
        return None


def resolve_frame(settings, config):
    """`settings` with the coordinate frame and resize factor it leaves open (None) taken from `config`."""
    from dataclasses import replace

    frame = frame_of_config(config)
    chosen = {k: getattr(settings, k) if getattr(settings, k) is not None else v for k, v in frame.items()}
    check_coord_frame(chosen["coord_frame"])
    return replace(settings, **chosen)


def policy_class(model_type: str):
    import transformers

    return getattr(transformers, backbone_for_type(model_type).model_class)


def load_policy(source: str, role: str = "policy (--model)", **kwargs):
    """The policy at `source` (directory or hub id) through its own transformers class; a one-line ValueError
    for another architecture, before any weights are read."""
    check_model_type(str(source), POLICY_TYPES, role)
    config = model_config(str(source))
    return policy_class(config["model_type"]).from_pretrained(source if not isinstance(source, Path) else str(source),
                                                                 **kwargs)


def warn_if_prompt_opens_think(processor, **chat_template_kwargs) -> bool:
    """Warn (and return True) when the chat template's generation prompt ends inside an opened `<think>` block
    (thinking-mode templates, e.g. some Qwen3.5 releases): the completion then starts mid-reasoning, without the
    `<think>` tag the reference's format rewards read from the completion, so their structure term is 0."""
    probe = [{"role": "user", "content": [{"type": "text", "text": "probe"}]}]
    text = processor.apply_chat_template(probe, add_generation_prompt=True, tokenize=False, **chat_template_kwargs)
    opened = text.rstrip().endswith("<think>")
    if opened:
        logger.warning("the chat template's generation prompt ends with an opened <think>: completions will not "
                       "start with <think> and the format rewards' structure term will be 0; use a template (or "
                       "chat_template_kwargs) whose generation prompt ends at 'assistant\\n'")
    return opened


def prompt_settings_for_model(model: str, **kwargs) -> PromptSettings:
    """The prompt settings `model` was trained with when its directory records them (templates, coordinate frame),
    else the defaults; `kwargs` (e.g. templates given on the command line) win over both. None values are ignored."""
    given = {k: v for k, v in kwargs.items() if v is not None}
    return PromptSettings(**{**(frame_of_model(model) or {}), **(load_prompt_templates(model) or {}), **given})
