"""Tiny, randomly initialised models of the real architectures, built offline.

`python -m socioreasoner.tiny --out DIR` writes

- `DIR/qwen2_5_vl/`: a `Qwen2_5_VLForConditionalGeneration` with a few small layers, Qwen's
  real tokenizer (see `qwen_tokenizer`) and the Qwen2-VL image processor (patch 14, merge 2);
- `DIR/qwen3_vl/`: a `Qwen3VLForConditionalGeneration` (patch 16, DeepStack, 0–1000 coordinates) with
  Qwen3-VL's real vocabulary (Qwen2.5's plus Qwen3's four added tokens) and an Instruct-style chat template;
- `DIR/qwen3_5/`: a `Qwen3_5ForConditionalGeneration` (Gated-DeltaNet + gated-attention layers) with the
  same tokenizer (Qwen3.5's own 248k vocabulary cannot be built offline; its config's token ids follow);
- `DIR/sam2/`: a `Sam2Model` (Hiera backbone, FPN neck, prompt encoder, two-way mask decoder)
  with small widths and a 256-px input, plus its `preprocessor_config.json`.

Everything downstream loads them by path with the same `from_pretrained` calls that load
`Qwen/Qwen2.5-VL-3B-Instruct` and `facebook/sam2-hiera-large`. Builds are deterministic per seed.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Sam2Config, Sam2Model
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from socioreasoner.models.chat_templates import chat_template
from socioreasoner.models.qwen_processor import QwenImageProcessor
from socioreasoner.models.qwen_tokenizer import build_qwen_tokenizer

logger = logging.getLogger(__name__)

QWEN_VOCAB_SIZE = 151_936  # Qwen2.5-VL-3B's embedding rows (151,665 tokens, padded)
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


def tiny_qwen_config(hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 2,
                     rope_theta: float = 1_000_000.0) -> Qwen2_5_VLConfig:
    """A Qwen2.5-VL config with the real structure and special-token ids, at toy widths."""
    heads = 4
    head_dim = hidden_size // heads
    unit = head_dim // 16  # mrope sections (t, h, w) add up to head_dim / 2; 3B: [16, 24, 24]
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=QWEN_VOCAB_SIZE,
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_layers,
            num_attention_heads=heads,
            num_key_value_heads=2,
            max_position_embeddings=4096,
            rope_parameters={"rope_type": "default", "rope_theta": rope_theta,
                             "mrope_section": [2 * unit, 3 * unit, 3 * unit]},
            bos_token_id=151643,
            eos_token_id=151645,
            pad_token_id=151643,
            tie_word_embeddings=True,
        ),
        vision_config=dict(
            depth=vision_depth,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
        ),
        tie_word_embeddings=True,
    )


def qwen2_5_vl_3b_config() -> Qwen2_5_VLConfig:
    """The architecture of `Qwen/Qwen2.5-VL-3B-Instruct` (for random-weight smoke runs on a GPU)."""
    return Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=QWEN_VOCAB_SIZE, hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
            num_attention_heads=16, num_key_value_heads=2, max_position_embeddings=128000,
            rope_parameters={"rope_type": "default", "rope_theta": 1_000_000.0, "mrope_section": [16, 24, 24]},
            bos_token_id=151643, eos_token_id=151645, tie_word_embeddings=True,
        ),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=2048,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                           fullatt_block_indexes=[7, 15, 23, 31]),
        tie_word_embeddings=True,
    )


def build_tiny_qwen(out_dir: str | Path, seed: int = 0, min_pixels: int = 56 * 56,
                    max_pixels: int = 448 * 448, real_size: bool = False, **config_kwargs) -> Path:
    """Write a tiny Qwen2.5-VL (model + processor) to `out_dir`; `real_size`: the 3B architecture, bf16."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    if real_size:
        model = Qwen2_5_VLForConditionalGeneration(qwen2_5_vl_3b_config()).to(torch.bfloat16)
        max_pixels = max(max_pixels, 768 * 768)
    else:
        model = Qwen2_5_VLForConditionalGeneration(tiny_qwen_config(**config_kwargs))
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(out_dir)
    tokenizer = build_qwen_tokenizer()
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=14, merge_size=2,
        temporal_patch_size=2,
    )
    QwenImageProcessor(image_processor=image_processor, tokenizer=tokenizer,
                       chat_template=chat_template("qwen2_5_vl")).save_pretrained(out_dir)
    return out_dir


def tiny_qwen3_vl_config(hidden_size: int = 64, num_layers: int = 2, vision_depth: int = 2,
                         family: str = "qwen3_vl"):
    """A Qwen3-VL (`family` "qwen3_vl") or Qwen3.5 ("qwen3_5") config with the real structure at toy widths:
    patch 16, merge 2, interleaved M-RoPE, DeepStack (Qwen3-VL), Gated-DeltaNet + gated-attention layers
    (Qwen3.5). Token ids are Qwen3-VL's, which our offline tokenizer has (Qwen3.5's 248k vocabulary is not
    available offline, so its tiny model uses Qwen3-VL's, with the config's image/vision ids set to it)."""
    from transformers import Qwen3_5Config, Qwen3VLConfig

    # Qwen3-VL: head_dim 32, the smallest vLLM's CPU attention runs (the text width stays 64: Qwen3 sizes heads apart)
    heads, head_dim = 4, 32 if family == "qwen3_vl" else 16
    text = dict(vocab_size=QWEN_VOCAB_SIZE, hidden_size=hidden_size, intermediate_size=hidden_size * 2,
                num_hidden_layers=num_layers, num_attention_heads=heads, num_key_value_heads=2, head_dim=head_dim,
                max_position_embeddings=4096, bos_token_id=151643, eos_token_id=151645, pad_token_id=151643,
                tie_word_embeddings=True)
    vision = dict(depth=vision_depth, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=hidden_size,
                  patch_size=16, spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)
    if family == "qwen3_vl":
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [6, 5, 5],
                                   "mrope_interleaved": True}
        vision["deepstack_visual_indexes"] = [0]
        return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True)
    if family != "qwen3_5":
        raise ValueError(f"family {family!r}: expected 'qwen3_vl' or 'qwen3_5'")
    text.update(layer_types=["linear_attention", "full_attention"][:num_layers] + ["full_attention"] * (num_layers - 2),
                linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2, linear_num_value_heads=4,
                rope_parameters={"rope_type": "default", "rope_theta": 10_000_000.0, "mrope_section": [2, 1, 1],
                                 "mrope_interleaved": True, "partial_rotary_factor": 0.5})
    return Qwen3_5Config(text_config=text, vision_config=vision, tie_word_embeddings=True, image_token_id=151655,
                         video_token_id=151656, vision_start_token_id=151652, vision_end_token_id=151653)


def build_tiny_qwen3(out_dir: str | Path, family: str = "qwen3_vl", seed: int = 0, min_pixels: int = 64 * 64,
                     max_pixels: int = 448 * 448, **config_kwargs) -> Path:
    """Write a tiny Qwen3-VL or Qwen3.5 (model + image-only processor) to `out_dir`."""
    from transformers import Qwen3_5ForConditionalGeneration, Qwen3VLForConditionalGeneration

    from socioreasoner.models.qwen_processor import Qwen3ImageProcessor

    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model_class = Qwen3VLForConditionalGeneration if family == "qwen3_vl" else Qwen3_5ForConditionalGeneration
    model = model_class(tiny_qwen3_vl_config(family=family, **config_kwargs))
    model.generation_config.eos_token_id = [151645, 151643]
    model.generation_config.pad_token_id = 151643
    model.save_pretrained(out_dir)
    image_processor = Qwen2VLImageProcessorPil(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels}, patch_size=16, merge_size=2,
        temporal_patch_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
    )
    Qwen3ImageProcessor(image_processor=image_processor, tokenizer=build_qwen_tokenizer(qwen3=True),
                        chat_template=chat_template(family)).save_pretrained(out_dir)
    return out_dir


def tiny_sam2_config(image_size: int = 256, hidden_size: int = 32) -> Sam2Config:
    """A SAM2 config (Hiera + FPN + prompt encoder + mask decoder) at toy widths."""
    s = image_size
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                image_size=[s, s],
                hidden_size=16,
                num_attention_heads=1,
                blocks_per_stage=[1, 1, 2, 1],
                embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 2, 2],
                window_size_per_stage=[8, 4, 8, 4],
                global_attention_blocks=[3],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[s // 4, s // 4], [s // 8, s // 8], [s // 16, s // 16]],
            fpn_hidden_size=hidden_size,
        ),
        prompt_encoder_config=dict(hidden_size=hidden_size, image_size=s, patch_size=16),
        mask_decoder_config=dict(hidden_size=hidden_size, mlp_dim=2 * hidden_size, num_attention_heads=2,
                                 iou_head_hidden_dim=hidden_size),
    )


# The Hiera sizes of the released SAM2 checkpoints (facebook/sam2-hiera-{size}; the same for sam2.1):
# (hidden, heads, blocks per stage, window sizes, global-attention blocks, window-embedding background)
SAM2_SIZES = {
    "tiny": (96, 1, [1, 2, 7, 2], [8, 4, 14, 7], [5, 7, 9], [7, 7]),
    "small": (96, 1, [1, 2, 11, 2], [8, 4, 14, 7], [7, 10, 13], [7, 7]),
    "base-plus": (112, 2, [2, 3, 16, 3], [8, 4, 14, 7], [12, 16, 20], [14, 14]),
    "large": (144, 2, [2, 6, 36, 4], [8, 4, 16, 8], [23, 33, 43], [7, 7]),
}


def sam2_config(size: str = "large") -> Sam2Config:
    """The architecture of `facebook/sam2-hiera-{size}` (random-weight benchmarks, memory plans)."""
    if size not in SAM2_SIZES:
        raise ValueError(f"SAM2 size {size!r}: expected one of {', '.join(SAM2_SIZES)}")
    hidden, heads, blocks, windows, global_blocks, background = SAM2_SIZES[size]
    widths = [hidden * 2**i for i in range(4)]
    return Sam2Config(
        vision_config=dict(
            backbone_config=dict(
                hidden_size=hidden, num_attention_heads=heads, blocks_per_stage=blocks,
                embed_dim_per_stage=widths, num_attention_heads_per_stage=[heads * 2**i for i in range(4)],
                window_size_per_stage=windows, global_attention_blocks=global_blocks,
                window_positional_embedding_background_size=background,
            ),
            backbone_channel_list=widths[::-1],
        ),
    )


def sam2_hiera_large_config() -> Sam2Config:
    """The architecture of `facebook/sam2-hiera-large` (for random-weight benchmarks on a GPU)."""
    return sam2_config("large")


def write_sam2_preprocessor_config(out_dir: Path, image_size: int) -> None:
    """The fields of SAM2's `preprocessor_config.json` that `SamSegmenter` reads."""
    config = {
        "image_processor_type": "Sam2ImageProcessorFast",
        "size": {"height": image_size, "width": image_size},
        "mask_size": {"height": image_size // 4, "width": image_size // 4},
        "image_mean": IMAGENET_MEAN,
        "image_std": IMAGENET_STD,
        "do_normalize": True,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_resize": True,
        "resample": 2,
    }
    (out_dir / "preprocessor_config.json").write_text(json.dumps(config, indent=2))


def build_tiny_sam2(out_dir: str | Path, seed: int = 0, image_size: int = 256, real_size: bool = False) -> Path:
    """Write a tiny SAM2 (model + preprocessor config) to `out_dir`; `real_size`: hiera-large, 1024 px."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    config = sam2_hiera_large_config() if real_size else tiny_sam2_config(image_size)
    Sam2Model(config).save_pretrained(out_dir)
    write_sam2_preprocessor_config(out_dir, 1024 if real_size else image_size)
    return out_dir


QWEN3_FAMILIES = ("qwen3_vl", "qwen3_5")


def build_tiny_models(out: str | Path, seed: int = 0, families: tuple[str, ...] = (),
                      **qwen_config_kwargs) -> dict[str, Path]:
    """The tiny Qwen2.5-VL and SAM2 under `out`, plus the tiny models of `families` (`QWEN3_FAMILIES`);
    `qwen_config_kwargs` go to `tiny_qwen_config` (e.g. `rope_theta`)."""
    out = Path(out)
    paths = {
        "qwen2_5_vl": build_tiny_qwen(out / "qwen2_5_vl", seed=seed, **qwen_config_kwargs),
        "sam2": build_tiny_sam2(out / "sam2", seed=seed),
    }
    for family in families:
        paths[family] = build_tiny_qwen3(out / family, family=family, seed=seed)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="directory to write qwen2_5_vl/, sam2/ (and qwen3_vl/, qwen3_5/) into")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden-size", type=int, default=64,
                        help="policy width (4 heads); vLLM's CPU backend needs a head size of 32 or more: 128")
    parser.add_argument("--family", choices=["all", "qwen2_5_vl", *QWEN3_FAMILIES], default="all",
                        help="which policy families to write besides qwen2_5_vl/ and sam2/ (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    families = QWEN3_FAMILIES if args.family == "all" else tuple(f for f in QWEN3_FAMILIES if f == args.family)
    paths = build_tiny_models(args.out, seed=args.seed, families=families, hidden_size=args.hidden_size)
    for name, path in paths.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
