import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Sam2Model

from socioreasoner.models.qwen_processor import load_qwen_processor
from socioreasoner.models.qwen_tokenizer import QWEN_NUM_REGULAR_TOKENS


@pytest.fixture(scope="module")
def processor(tiny_models):
    return load_qwen_processor(str(tiny_models["qwen2_5_vl"]))


def test_qwen_round_trip_is_exact(tiny_models, tmp_path):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_models["qwen2_5_vl"])
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    model.save_pretrained(tmp_path)
    again = Qwen2_5_VLForConditionalGeneration.from_pretrained(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), name


def test_special_tokens_agree_with_qwen2_5_vl_config(processor):
    tok = processor.tokenizer
    defaults = Qwen2_5_VLConfig()
    assert tok.convert_tokens_to_ids("<|image_pad|>") == defaults.image_token_id == 151655
    assert tok.convert_tokens_to_ids("<|video_pad|>") == defaults.video_token_id
    assert tok.convert_tokens_to_ids("<|vision_start|>") == defaults.vision_start_token_id
    assert tok.convert_tokens_to_ids("<|endoftext|>") == QWEN_NUM_REGULAR_TOKENS
    assert tok.convert_tokens_to_ids("<|im_end|>") == 151645
    assert len(tok) == 151665


def test_real_qwen_vocabulary_tokenises_digits_one_by_one(processor):
    tok = processor.tokenizer
    # "Hello" and " world" are ids 9707 and 1879 in Qwen2's vocabulary
    assert tok("Hello world").input_ids == [9707, 1879]
    ids = tok("[123, 45]").input_ids
    assert [tok.decode([i]) for i in ids] == ["[", "1", "2", "3", ",", " ", "4", "5", "]"]
    assert tok.decode(tok("<|im_start|>user\nschool<|im_end|>").input_ids) == "<|im_start|>user\nschool<|im_end|>"


def test_processor_turns_two_images_and_text_into_model_inputs(tiny_models, processor):
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_models["qwen2_5_vl"]).eval()
    rng = np.random.default_rng(0)
    map_img = Image.fromarray(rng.integers(0, 255, (112, 140, 3), dtype=np.uint8))
    sat_img = Image.fromarray(rng.integers(0, 255, (112, 140, 3), dtype=np.uint8))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "image"},
                                             {"type": "text", "text": "Find the school."}]}]
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text.count("<|vision_start|><|image_pad|><|vision_end|>") == 2
    assert text.index("<|image_pad|>") > text.index("<|im_start|>user")
    inputs = processor(text=[text], images=[[map_img, sat_img]], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert grid.tolist() == [[1, 8, 10], [1, 8, 10]]  # 112x140 -> 8x10 patches of 14 px
    n_image_tokens = int((inputs["input_ids"] == 151655).sum())
    assert n_image_tokens == int(grid.prod(-1).sum()) // 4  # 2x2 merge
    assert inputs["pixel_values"].shape[0] == int(grid.prod(-1).sum())
    with torch.no_grad():
        logits = model(**inputs).logits
    assert logits.shape[:2] == inputs["input_ids"].shape and torch.isfinite(logits).all()
    out = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    assert out.shape[1] == inputs["input_ids"].shape[1] + 5
    assert torch.equal(out[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_processor_save_and_reload(processor, tmp_path):
    processor.save_pretrained(tmp_path)
    again = load_qwen_processor(str(tmp_path), max_pixels=224 * 224)
    assert again.image_processor.size["longest_edge"] == 224 * 224
    assert again.chat_template == processor.chat_template
    assert again.tokenizer("map 12").input_ids == processor.tokenizer("map 12").input_ids


def test_sam2_round_trip_and_forward(tiny_models):
    model = Sam2Model.from_pretrained(tiny_models["sam2"]).eval()
    pre = json.loads((tiny_models["sam2"] / "preprocessor_config.json").read_text())
    size = pre["size"]["height"]
    assert model.config.prompt_encoder_config.image_size == size
    with torch.no_grad():
        emb = model.get_image_embeddings(torch.randn(1, 3, size, size))
        out = model(image_embeddings=emb, input_boxes=torch.tensor([[[10.0, 10.0, 100.0, 120.0]]]))
    assert out.pred_masks.shape == (1, 1, 3, size // 4, size // 4)
    assert out.iou_scores.shape == (1, 1, 3)


def test_builds_are_deterministic(tmp_path):
    from socioreasoner.models.tiny import build_tiny_sam2

    a = Sam2Model.from_pretrained(build_tiny_sam2(tmp_path / "a", seed=3))
    b = Sam2Model.from_pretrained(build_tiny_sam2(tmp_path / "b", seed=3))
    c = Sam2Model.from_pretrained(build_tiny_sam2(tmp_path / "c", seed=4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_rope_theta_sets_how_far_image_columns_rotate_apart():
    """The knob docs/toy_learnability.md discusses: M-RoPE's width slots get the lowest frequencies."""
    import math

    from socioreasoner.models.tiny import tiny_qwen_config

    def width_rotation_per_column(theta):
        text = tiny_qwen_config(rope_theta=theta).text_config
        head_dim = text.hidden_size // text.num_attention_heads
        first_width_slot = sum(text.rope_parameters["mrope_section"][:2])
        return text.rope_parameters["rope_theta"] ** (-2 * first_width_slot / head_dim)

    assert width_rotation_per_column(1_000_000.0) < 1e-3
    assert math.isclose(width_rotation_per_column(2.0), 2 ** (-10 / 16))
