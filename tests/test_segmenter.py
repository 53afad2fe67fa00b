import numpy as np
import pytest
import torch
from PIL import Image

from socioreasoner.method.parsing import ParsedObject
from socioreasoner.models.segmenter import SamSegmenter


@pytest.fixture(scope="module")
def segmenter(tiny_models):
    return SamSegmenter(str(tiny_models["sam2"]), device="cpu")


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (150, 200, 3), dtype=np.uint8), rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)]


PROMPTS = [
    [{"box": [10, 10, 80, 90]}, {"box": [100, 20, 190, 140], "points": [[120, 50], [150, 60]]}],
    [],
    [{"box": [5, 5, 60, 60], "points": [[20, 20]]}, {"box": [30, 40, 120, 100]}],
    [ParsedObject(box=[0, 0, 199, 149], points=[[100, 75]])],
]


def test_masks_have_original_size_and_empty_prompt_gives_empty_mask(segmenter, images):
    emb = segmenter.encode([images[0]])[0]
    masks = segmenter.segment(emb, PROMPTS)
    assert len(masks) == len(PROMPTS)
    assert all(m.shape == (150, 200) and m.dtype == bool for m in masks)
    assert not masks[1].any()
    assert masks[0].any() and masks[3].any()


def test_batched_equals_one_by_one(segmenter, images):
    emb = segmenter.encode([images[0]])[0]
    batched = segmenter.segment(emb, PROMPTS)
    single = [segmenter.segment(emb, [p])[0] for p in PROMPTS]
    for a, b in zip(batched, single):
        assert np.array_equal(a, b)
    # and per object: the union of single-object masks
    objects = [segmenter.segment(emb, [[o]])[0] for o in PROMPTS[0]]
    assert np.array_equal(batched[0], objects[0] | objects[1])


def test_encoder_runs_once_per_distinct_image(segmenter, images):
    before = segmenter.num_encodes
    embs = segmenter.encode([images[0], images[1], images[0].copy(), Image.fromarray(images[1])])
    assert segmenter.num_encodes - before == 2
    assert embs[0] is embs[2] and embs[1] is embs[3]
    assert (embs[1].height, embs[1].width) == (90, 120)
    masks = segmenter.segment(embs[1], [[{"box": [1, 1, 60, 60]}]])
    assert masks[0].shape == (90, 120)


def test_segment_does_not_reencode_and_batches_decodes(segmenter, images):
    emb = segmenter.encode([images[0]])[0]
    encodes, decodes = segmenter.num_encodes, segmenter.num_decodes
    segmenter.segment(emb, [[{"box": [10, 10, 50, 50]}, {"box": [60, 60, 90, 90]}]] * 8)
    assert segmenter.num_encodes == encodes
    assert segmenter.num_decodes - decodes == 1  # 16 box-only objects in one decoder call


def test_prompts_are_mapped_from_original_pixels_to_the_sam_input_frame(segmenter, monkeypatch):
    image = np.zeros((100, 200, 3), np.uint8)  # H=100, W=200; tiny SAM2 input is 256x256
    emb = segmenter.encode([image])[0]
    seen = {}
    forward = segmenter.model.forward

    def spy(**kwargs):
        seen.update(kwargs)
        return forward(**kwargs)

    monkeypatch.setattr(segmenter, "model", segmenter.model)
    monkeypatch.setattr(segmenter.model, "forward", spy)
    segmenter.segment(emb, [[{"box": [50, 25, 100, 50], "points": [[150, 75]]}]])
    assert seen["input_boxes"].tolist() == [[[64.0, 64.0, 128.0, 128.0]]]
    assert seen["input_points"].tolist() == [[[[192.0, 192.0]]]]
    assert seen["input_labels"].tolist() == [[[1]]]


def test_frozen_and_bad_objects(segmenter, images):
    assert not any(p.requires_grad for p in segmenter.model.parameters())
    assert not segmenter.model.training
    emb = segmenter.encode([images[0]])[0]
    with pytest.raises(ValueError, match="4-number box"):
        segmenter.segment(emb, [[{"box": [1, 2, 3]}]])
    with pytest.raises(ValueError, match="RGB"):
        segmenter.encode([np.zeros((5, 5))])
    assert torch.device("cpu") == segmenter.device


def test_sam2_loads_whole_inside_a_zero3_run(tiny_models):
    """Under ZeRO-3 transformers would partition SAM2 on load; the segmenter must load it whole."""
    from transformers.integrations import deepspeed as hf_deepspeed
    from transformers.integrations import is_deepspeed_zero3_enabled

    class Zero3Config:  # what accelerate registers for a ZeRO-3 launch, as transformers reads it
        def is_zero3(self):
            return True

    config = Zero3Config()
    hf_deepspeed.set_hf_deepspeed_config(config)
    try:
        assert is_deepspeed_zero3_enabled()
        seg = SamSegmenter(str(tiny_models["sam2"]), device="cpu")
        assert is_deepspeed_zero3_enabled()  # restored for the policy that DeepSpeed does partition
    finally:
        hf_deepspeed.unset_hf_deepspeed_config()
    conv = seg.model.vision_encoder.backbone.patch_embed.projection.weight
    assert conv.dim() == 4 and conv.numel() > 0
