"""Loading the Qwen processors (Qwen2.5-VL, Qwen3-VL, Qwen3.5) the same way for real checkpoints and tiny ones.

transformers' `Qwen2_5_VLProcessor` and `Qwen3VLProcessor` insist on a video processor, and the Qwen
video processors import torchvision. Without torchvision (our CPU install), `AutoProcessor.from_pretrained`
silently degrades to a bare tokenizer. We only ever feed images, so `load_qwen_processor`
builds the processor explicitly from its parts — the tokenizer, the (PIL-backed) Qwen2-VL
image processor (all three families use it: patch 14 for Qwen2.5-VL, 16 for the others, read from the
model's `preprocessor_config.json`) and the chat template — for hub checkpoints and the tiny models
alike, with or without torchvision. The processor class follows the model type (`backbones`).
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoTokenizer, Qwen2_5_VLProcessor, Qwen3VLProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil


class _ImageOnly:
    """A Qwen processor for image (not video) inputs; needs no torchvision."""

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
        config_path = save_directory / "preprocessor_config.json"  # which processor class reads these parts back
        config = json.loads(config_path.read_text())
        config["processor_class"] = self.family_processor
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if self.chat_template:
            (save_directory / "chat_template.jinja").write_text(self.chat_template)
        return [str(save_directory)]


class QwenImageProcessor(_ImageOnly, Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` for images only (Qwen2.5-VL)."""

    family_processor = "Qwen2_5_VLProcessor"


class Qwen3ImageProcessor(_ImageOnly, Qwen3VLProcessor):
    """`Qwen3VLProcessor` for images only (Qwen3-VL, Qwen3.5)."""

    family_processor = "Qwen3VLProcessor"


PROCESSOR_CLASSES = {"Qwen2_5_VLProcessor": QwenImageProcessor, "Qwen3VLProcessor": Qwen3ImageProcessor}


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


def _processor_class(model_id: str) -> str:
    """The processor class of `model_id`: its model type's (`backbones`), or for a directory holding only
    processor files, the `processor_class` its `preprocessor_config.json` names (Qwen2.5-VL's if none)."""
    from socioreasoner.models.backbones import backbone_for_type
    from socioreasoner.models.model_types import model_type

    directory = Path(model_id)
    if directory.is_dir() and not (directory / "config.json").is_file():
        try:
            name = json.loads((directory / "preprocessor_config.json").read_text()).get("processor_class")
        except (OSError, ValueError, AttributeError) as err:
            raise ValueError(f"{directory}/preprocessor_config.json: unreadable ({type(err).__name__})") from err
        name = name or "Qwen2_5_VLProcessor"
        if name not in PROCESSOR_CLASSES:
            raise ValueError(f"{model_id}/preprocessor_config.json: processor_class {name!r}; expected one of "
                             f"{sorted(PROCESSOR_CLASSES)}")
        return name
    return backbone_for_type(model_type(model_id), model_id).processor_class


def load_qwen_processor(
    model_id: str, min_pixels: int | None = None, max_pixels: int | None = None, **hub_kwargs
) -> QwenImageProcessor | Qwen3ImageProcessor:
    """The image-only processor of the Qwen model `model_id` (hub id or directory), of its family's class.

    `min_pixels` / `max_pixels` override the image processor's bounds; we resize images to the
    Qwen frame ourselves (`socioreasoner.method.frame`), so they only need to admit that size.
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
    processor_class = PROCESSOR_CLASSES[_processor_class(model_id)]
    return processor_class(image_processor=image_processor, tokenizer=tokenizer, chat_template=chat_template)
