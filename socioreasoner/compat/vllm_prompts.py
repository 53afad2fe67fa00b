"""Make vLLM sample from the prompt the trainer scores: one image placeholder per image.

TRL 1.16 (`trl.generation.vllm_generation.VLLMGeneration.generate`) hands vLLM the prompt token
ids the HF processor made, in which each image's `<|image_pad|>` is already expanded into one
token per merged patch (64 for a 224-px image). vLLM's multimodal processor (measured with vLLM
0.31.0 and 0.32.0, CPU builds; the expansion is not device code) expands the placeholder again,
so vLLM samples from a longer prompt than the trainer scores (368 trainer tokens became 494;
`sampling/sampling_logp_difference` 0.11 mean at step 1 with identical weights, 0.0012 with the
runs collapsed: issue #19). `collapse_image_runs` turns every run of image-pad tokens back into
the single placeholder vLLM expects; `fix_vllm_prompts` wraps a `VLLMGeneration`'s `generate` so
both stages' prompts (the stage-2 drafts included) reach vLLM that way, and checks the prompts vLLM
reports it ran against the trainer's: a vLLM that sized an image differently (or a TRL that stopped
expanding) is an error, not a silent bias. TRL scores with its own prompt ids (it discards the ones vLLM
returns), so nothing else changes.

Written for TRL 1.16.0 with vLLM 0.31.0 / 0.32.0; `tests/test_vllm_prompts.py` fails loudly when
TRL's `generate` signature changes.
"""

from __future__ import annotations

import functools
import logging

logger = logging.getLogger(__name__)

WRAPPED_FLAG = "_socioreasoner_collapses_image_runs"


def image_token_id(processing_class) -> int:
    """The id of Qwen's `<|image_pad|>` (the processor's image placeholder)."""
    token_id = getattr(processing_class, "image_token_id", None)
    if token_id is None:
        token_id = processing_class.tokenizer.convert_tokens_to_ids(processing_class.image_token)
    return int(token_id)


def collapse_image_runs(ids: list[int], image_token_id: int) -> list[int]:
    """`ids` with every run of consecutive `image_token_id` tokens replaced by one."""
    out = []
    for token in ids:
        if token == image_token_id and out and out[-1] == image_token_id:
            continue
        out.append(token)
    return out


def check_prompts_ran(trainer_prompts, vllm_prompts) -> None:
    """Raise if vLLM ran other prompts than the trainer's (one returned prompt per prompt given; TRL's colocate
    mode). Nothing to compare when the counts differ (several samples per prompt)."""
    if vllm_prompts is None or len(vllm_prompts) != len(trainer_prompts):
        return
    for index, (ours, ran) in enumerate(zip(trainer_prompts, vllm_prompts)):
        if list(ran) != list(ours):
            raise RuntimeError(f"vLLM ran a {len(ran)}-token prompt for our {len(ours)}-token prompt {index}: it "
                               "would answer another prompt than the one the trainer scores (its image processor "
                               "sized an image differently, or TRL/vLLM changed how image tokens are passed); "
                               "see socioreasoner/compat/vllm_prompts.py")


def fix_vllm_prompts(vllm_generation, image_token_id: int) -> None:
    """Wrap `vllm_generation.generate(prompts, images, ...)` so that prompts with images reach vLLM with one
    placeholder per image (prompts without images pass unchanged). Idempotent."""
    generate = vllm_generation.generate
    if getattr(generate, WRAPPED_FLAG, False):
        return

    @functools.wraps(generate)
    def generate_with_collapsed_images(prompts, images, *args, **kwargs):
        if images is None:
            return generate(prompts, images, *args, **kwargs)
        collapsed = [ids if imgs is None else collapse_image_runs(list(ids), image_token_id)
                     for ids, imgs in zip(prompts, images, strict=True)]
        result = generate(collapsed, images, *args, **kwargs)
        check_prompts_ran(prompts, result[0])
        return result

    setattr(generate_with_collapsed_images, WRAPPED_FLAG, True)
    vllm_generation.generate = generate_with_collapsed_images
    logger.info("vLLM prompts: image-pad runs collapsed to one placeholder per image (token %d)", image_token_id)
