"""The chat templates the tiny models are saved with (real checkpoints bring their own): TRL's shipped copies of
the families' official templates, `trl.chat_template_utils` (trl 1.16: `qwen2_5_vl_chat_template`,
`qwen3_vl_chat_template`). The tiny Qwen3.5 uses Qwen3-VL's: no `<think>` prefill in the generation prompt
(docs/models.md says why). TRL's version is pinned by the lock, and tests/test_backbones.py pins the text each
renders for a two-image prompt, so a change in TRL's copies fails loudly. TRL is imported on first use only: the
inference layer does not import it."""

from __future__ import annotations

TRL_TEMPLATE_NAMES = {"qwen2_5_vl": "qwen2_5_vl_chat_template", "qwen3_vl": "qwen3_vl_chat_template",
                      "qwen3_5": "qwen3_vl_chat_template"}


def chat_template(family: str) -> str:
    """The chat template (jinja text) of a policy family, from TRL's shipped copies."""
    if family not in TRL_TEMPLATE_NAMES:
        raise ValueError(f"family {family!r}: expected one of {sorted(TRL_TEMPLATE_NAMES)}")
    from trl import chat_template_utils

    return getattr(chat_template_utils, TRL_TEMPLATE_NAMES[family])
