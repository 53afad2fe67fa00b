"""Loading Qwen2.5-VL's processor the same way for the real checkpoint and the tiny one.

transformers' `Qwen2_5_VLProcessor` insists on a video processor, and the Qwen video processor
imports torchvision. Without torchvision (our CPU install), `AutoProcessor.from_pretrained`
silently degrades to a bare tokenizer. We only ever feed images, so `load_qwen_processor`
builds the processor explicitly from its parts — the tokenizer, the (PIL-backed) Qwen2-VL
image processor and the chat template — for `Qwen/Qwen2.5-VL-3B-Instruct` and the tiny model
alike, with or without torchvision.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class QwenImageProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` for image (not video) inputs; needs no torchvision."""

    def check_argument_for_proper_class(self, argument_name, argument):
        if argument_name == "video_processor" and argument is None:
            return None
        return super().check_argument_for_proper_class(argument_name, argument)

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """Write the parts in the hub's layout, so `load_qwen_processor` reads them back."""
        save_directory = Path(save_directory)
        save_directory.mkdir(parents=True, exist_ok=True)
        self.tokenizer.save_pretrained(save_directory)
        self.image_processor.save_pretrained(save_directory)
        if self.chat_template:
            (save_directory / "chat_template.jinja").write_text(self.chat_template)
        return [str(save_directory)]


def _chat_template(model_id: str, tokenizer, **hub_kwargs) -> str | None:
    """The chat template from `chat_template.jinja`/`chat_template.json`, else the tokenizer's."""
    local = Path(model_id)
    for name in ("chat_template.jinja", "chat_template.json"):
        if local.is_dir():
            path = local / name
            if not path.is_file():
                continue
        else:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError

            try:
                path = Path(hf_hub_download(model_id, name, **hub_kwargs))
            except EntryNotFoundError:
                continue
        text = path.read_text()
        return json.loads(text)["chat_template"] if name.endswith(".json") else text
    return tokenizer.chat_template


def load_qwen_processor(
    model_id: str, min_pixels: int | None = None, max_pixels: int | None = None, **hub_kwargs
) -> QwenImageProcessor:
    """The Qwen2.5-VL processor of `model_id` (hub id or directory).

    `min_pixels` / `max_pixels` override the image processor's bounds; we resize images to the
    Qwen frame ourselves (`socioreasoner.frame`), so they only need to admit that size.
    """
    tokenizer = AutoTokenizer.from_pretrained(model_id, padding_side="left", **hub_kwargs)
    image_processor = Qwen2VLImageProcessorPil.from_pretrained(model_id, **hub_kwargs)
    if min_pixels is not None or max_pixels is not None:
        size = dict(image_processor.size)
        size["shortest_edge"] = min_pixels if min_pixels is not None else size["shortest_edge"]
        size["longest_edge"] = max_pixels if max_pixels is not None else size["longest_edge"]
        image_processor.size = size
    chat_template = _chat_template(model_id, tokenizer, **hub_kwargs)
    if not chat_template:
        raise ValueError(f"{model_id}: no chat template found (chat_template.jinja/.json or tokenizer_config)")
    return QwenImageProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
