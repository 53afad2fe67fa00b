import numpy as np
import pytest
import torch
from PIL import Image

from socioreasoner.method.pipeline import PromptSettings, Sample, stage_transition
from socioreasoner.method.render import resize_mask
from socioreasoner.models.segmenter import SamSegmenter
from socioreasoner.training.stage_batch import (
    concat_stage_outputs,
    groups_by_sample,
    stage2_row,
    training_row,
)

PAD = 151643


def fake_output(n, p_len, c_len, seed):
    g = torch.Generator().manual_seed(seed)
    prompt_ids = torch.randint(0, 1000, (n, p_len), generator=g)
    completion_ids = torch.randint(0, 1000, (n, c_len), generator=g)
    mm = torch.zeros(n, p_len + c_len, dtype=torch.long)
    mm[:, 1:3] = 1  # two image tokens near the start of each prompt
    return {
        "prompt_ids": prompt_ids, "prompt_mask": torch.ones(n, p_len, dtype=torch.long),
        "completion_ids": completion_ids, "completion_mask": torch.ones(n, c_len, dtype=torch.long),
        "advantages": torch.arange(n, dtype=torch.float) + seed,
        "num_items_in_batch": torch.tensor(n * c_len),
        "ref_per_token_logps": -torch.rand(n, c_len, generator=g),
        "pixel_values": torch.rand(4 * n, 6, generator=g), "image_grid_thw": torch.tensor([[1, 2, 2]] * n),
        "mm_token_type_ids": mm, "num_images": [1] * n,
    }


def test_concat_pads_prompts_left_and_completions_right():
    a, b = fake_output(2, 5, 7, 0), fake_output(3, 9, 4, 10)
    out = concat_stage_outputs(a, b, PAD)
    assert out["prompt_ids"].shape == (5, 9) and out["completion_ids"].shape == (5, 7)
    assert torch.equal(out["prompt_ids"][:2, 4:], a["prompt_ids"]) and (out["prompt_ids"][:2, :4] == PAD).all()
    assert torch.equal(out["prompt_mask"][:2].sum(1), torch.tensor([5, 5]))
    assert torch.equal(out["completion_ids"][2:, :4], b["completion_ids"]) and (out["completion_ids"][2:, 4:] == PAD).all()
    assert torch.equal(out["completion_mask"][2:].sum(1), torch.tensor([4, 4, 4]))
    assert (out["ref_per_token_logps"][2:, 4:] == 0).all()
    assert torch.equal(out["advantages"], torch.cat([a["advantages"], b["advantages"]]))
    assert out["num_items_in_batch"].item() == 2 * 7 + 3 * 4
    assert out["pixel_values"].shape[0] == 20 and out["image_grid_thw"].shape[0] == 5
    assert out["num_images"] == [1] * 5
    # image-token flags stay aligned with the (re-padded) prompt tokens
    mm = out["mm_token_type_ids"]
    assert mm.shape == (5, 16)
    assert mm[0].nonzero().flatten().tolist() == [5, 6]      # shifted by the 4 pad tokens
    assert mm[2].nonzero().flatten().tolist() == [1, 2]


def test_concat_rejects_mismatched_outputs():
    a, b = fake_output(1, 3, 3, 0), fake_output(1, 3, 3, 1)
    del b["ref_per_token_logps"]
    with pytest.raises(ValueError, match="ref_per_token_logps"):
        concat_stage_outputs(a, b, PAD)


def test_groups_by_sample():
    rows = [{"id": i} for i in ["a", "a", "a", "b", "b", "c"]]
    assert list(groups_by_sample(rows)) == [(0, 3), (3, 5), (5, 6)]


@pytest.fixture(scope="module")
def record(toy_city):
    from socioreasoner.data import load_socioseg

    return load_socioseg(str(toy_city), "train")[0]


def test_stage2_rows_carry_the_rendered_draft(tiny_models, record):
    settings = PromptSettings(max_pixels=160 * 160)
    row = training_row(record, settings)
    assert row["stage"] == 1 and len(row["images"]) == 2
    frame = row["frame"]
    assert row["images"][1].size == (frame[2], frame[3])
    seg = SamSegmenter(str(tiny_models["sam2"]), device="cpu")
    sample = Sample.from_images(row["problem"], row["map_image"], row["sat_image"], settings)
    box = [int(v) for v in row["gt_boxes"][0]]
    texts = [f'<think>t</think><answer>[{{"bbox_2d": {box}}}]</answer>', "no answer"]
    embedding = seg.encode([sample.sat_image])[0]
    results = stage_transition(seg, embedding, sample, texts, settings)
    rows = [stage2_row(row, r) for r in results]
    assert [r["stage"] for r in rows] == [2, 2]
    assert rows[0]["stage1_boxes"] == [[float(v) for v in box]] and rows[1]["stage1_boxes"] == []
    for image, original in zip(rows[0]["images"], row["images"]):
        assert image.size == original.size
        assert not np.array_equal(np.asarray(image), np.asarray(original))
    # the draft box outline is drawn where the model put it: blue, tinted where the stage-1 mask covers it
    sat_draft = np.asarray(rows[0]["images"][1])
    x, y = (box[0] + box[2]) // 2, box[1]
    under_mask = resize_mask(results[0].mask, row["images"][1].size)[y, x]
    assert tuple(sat_draft[y, x]) == ((102, 0, 153) if under_mask else (0, 0, 255))
    assert rows[0]["stage1_answer"] == f'[{{"bbox_2d": {box}}}]' and rows[1]["stage1_answer"] == ""
    # no boxes and (so) an empty mask: nothing drawn, images equal the originals
    assert not results[1].mask.any()
    assert np.array_equal(np.asarray(rows[1]["images"][1]), np.asarray(row["images"][1]))
    text = rows[0]["prompt"][0]["content"][2]["text"]
    assert f'"bbox_2d": {box}'.replace(" ", "") in text.replace(" ", "")
    assert isinstance(rows[0]["images"][0], Image.Image)
