from dataclasses import replace

import numpy as np
import pytest

from socioreasoner.data import load_socioseg
from socioreasoner.method.parsing import parse_completion
from socioreasoner.method.pipeline import PromptSettings
from socioreasoner.method.prompts import answer_text, format_boxes
from socioreasoner.method.rewards import stage1_rewards, stage2_format_reward, stage2_points_reward
from socioreasoner.models.backbones import prompt_settings_for_model
from socioreasoner.training.sft import component_points, sft_examples


def test_sft_targets_earn_full_rewards(toy_city):
    ds = load_socioseg(str(toy_city), "train")
    settings = PromptSettings(max_pixels=160 * 160)
    examples = sft_examples(ds, settings)
    assert len(examples) == 2 * len(ds)
    for i in range(len(ds)):
        s1, s2 = examples[2 * i], examples[2 * i + 1]
        target1 = s1["completion"][0]["content"]
        boxes = parse_completion(target1).boxes
        assert len(boxes) == ds[i]["num_objects"]
        assert stage1_rewards(target1, boxes)["total"] == 4.0
        target2 = s2["completion"][0]["content"]
        assert stage2_format_reward(target2, answer_text(target1)) == 2.0
        assert stage2_points_reward(target2) > 0.6
        assert len(s1["images"]) == len(s2["images"]) == 2
        # the stage-2 prompt quotes the stage-1 target's answer as a rollout would (the reference's raw text)
        assert f"The found bbox(s) are: {answer_text(target1)}." in s2["prompt"][0]["content"][2]["text"]
    assert len(sft_examples(ds, settings, stages=(1,))) == len(ds)
    assert len(sft_examples(ds, settings, stage2_fraction=0.0)) == len(ds)
    with pytest.raises(ValueError, match="stage2_fraction"):
        sft_examples(ds, settings, stage2_fraction=1.5)


def test_component_points_lie_on_the_mask_strictly_inside_the_box():
    mask = np.zeros((30, 30), bool)
    mask[5:20, 8:12] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        for x, y in component_points(mask, [8, 5, 11, 19], rng):
            assert mask[y, x] and 8 < x < 11 and 5 < y < 19


def test_diagonal_points_are_deterministic_on_the_mask_inside_the_box(toy_city):
    from socioreasoner.training.sft import diagonal_points

    square = np.zeros((60, 60), bool)
    square[10:41, 10:41] = True
    assert diagonal_points(square, [10, 10, 40, 40]) == [[20, 20], [30, 30]]
    # an L-shaped component: the diagonal points fall off the mask and snap to the nearest mask pixel
    ell = np.zeros((60, 60), bool)
    ell[10:41, 10:15] = True
    ell[36:41, 10:41] = True
    for x, y in diagonal_points(ell, [10, 10, 40, 40], n=3):
        assert ell[y, x] and 10 < x < 40 and 10 < y < 40
    assert diagonal_points(np.zeros((60, 60), bool), [10, 10, 40, 40]) == [[25, 25]]

    ds = load_socioseg(str(toy_city), "train")
    settings = PromptSettings(max_pixels=160 * 160)
    first, second = (sft_examples(ds, settings, seed=s, points="diagonal") for s in (0, 1))
    assert first["completion"] == second["completion"]  # the random choice is gone
    for example in first.select(range(1, len(first), 2)):
        target = example["completion"][0]["content"]
        assert stage2_format_reward(target, format_boxes(parse_completion(target).boxes)) == 2.0
    with pytest.raises(ValueError, match="points"):
        sft_examples(ds, settings, points="centre")


def test_sft_with_frozen_vision_tower_trains_only_the_language_model(tiny_models, toy_city, tmp_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.models.policy import freeze_vision_tower
    from socioreasoner.training.sft import run_sft

    path = str(tiny_models["qwen2_5_vl"])
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(path)
    assert freeze_vision_tower(model) == len(list(model.model.visual.parameters())) > 0
    assert not any(p.requires_grad for p in model.model.visual.parameters())
    assert all(p.requires_grad for p in model.model.language_model.parameters())

    settings = PromptSettings(stage1_template='Find "{query}" ({width}x{height}).', max_pixels=160 * 160)
    examples = sft_examples(load_socioseg(str(toy_city), "train"), settings, stages=(1,))
    assert 'Find "' in examples[0]["prompt"][0]["content"][2]["text"]
    out = run_sft(path, examples, str(tmp_path / "sft"), max_steps=3, learning_rate=1e-2, freeze_vision=True,
                  settings=settings)
    # the prompts it was trained with travel with the checkpoint
    # (with the frame of its family, read from its config)
    assert prompt_settings_for_model(str(out), max_pixels=160 * 160) == replace(
        settings, coord_frame="absolute", resize_factor=28)
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out))
    before, after = model.state_dict(), trained.state_dict()
    vision = [k for k in before if k.startswith("model.visual.")]
    language = [k for k in before if k.startswith("model.language_model.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in language)


def test_noisy_draft_changes_one_thing_and_keeps_boxes_in_frame():
    from socioreasoner.training.sft import noisy_draft

    gt = [[10, 10, 40, 30], [60, 50, 90, 95]]
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(200):
        draft = noisy_draft(gt, 120, 100, rng)
        assert draft != gt
        for x1, y1, x2, y2 in draft:
            assert 0 <= x1 < x2 < 120 and 0 <= y1 < y2 < 100
        sizes = sorted((b[2] - b[0], b[3] - b[1]) for b in draft)
        assert set(sizes) <= {(30, 20), (30, 45)}  # moved or added boxes keep a GT box's size
        kinds.add(len(draft) - len(gt))
        if len(draft) == len(gt):  # one box moved, the other kept
            assert sum(d == g for d, g in zip(draft, gt)) == 1
    assert kinds == {-1, 0, 1}
    assert noisy_draft([], 120, 100, rng) == []
    assert len(noisy_draft([[10, 10, 40, 30]], 120, 100, rng)) >= 1  # a single box is never dropped


def test_stage2_examples_on_noisy_drafts_keep_the_drafts_boxes(toy_city):
    ds = load_socioseg(str(toy_city), "train")
    settings = PromptSettings(max_pixels=160 * 160)
    clean = sft_examples(ds, settings, seed=0, points="diagonal", stages=(2,))
    noisy = sft_examples(ds, settings, seed=0, points="diagonal", stages=(2,), draft_noise=1.0)
    assert len(noisy) == len(clean) == len(ds)
    for a, b in zip(clean, noisy):
        prompt_a, prompt_b = (e["prompt"][0]["content"][2]["text"] for e in (a, b))
        assert prompt_a != prompt_b  # every draft differs from the GT boxes
        draft = parse_completion(b["completion"][0]["content"]).boxes
        assert format_boxes(draft) in prompt_b  # the prompt names the draft's boxes
        # the target keeps the draft's boxes: full stage-2 format reward against the draft
        assert stage2_format_reward(b["completion"][0]["content"], format_boxes(draft)) == 2.0
        assert np.asarray(a["images"][1]).shape == np.asarray(b["images"][1]).shape
        assert not np.array_equal(np.asarray(a["images"][1]), np.asarray(b["images"][1]))  # drawn draft differs
    same = sft_examples(ds, settings, seed=0, points="diagonal", stages=(2,), draft_noise=0.0)
    assert same["completion"] == clean["completion"]
    with pytest.raises(ValueError, match="draft_noise"):
        sft_examples(ds, settings, draft_noise=-0.1)


def test_stage1_reasoning_sentence_is_configurable(toy_city):
    from socioreasoner.training.sft import STAGE1_REASONING

    ds = load_socioseg(str(toy_city), "train")
    settings = PromptSettings(max_pixels=160 * 160)
    default = sft_examples(ds, settings, stages=(1,))
    plain = sft_examples(ds, settings, stages=(1,), stage1_reasoning="The red regions are the targets.")
    for record, a, b in zip(ds, default, plain):
        target_a, target_b = a["completion"][0]["content"], b["completion"][0]["content"]
        assert target_a.startswith("<think>" + STAGE1_REASONING.format(query=record["problem"]))
        assert target_b.startswith("<think>The red regions are the targets.</think><answer>")
        assert parse_completion(target_a).boxes == parse_completion(target_b).boxes


def test_stage2_drafts_can_show_the_segmenters_mask_as_at_inference(toy_city):
    from socioreasoner.data.targets import mask_to_array
    from socioreasoner.method.pipeline import Sample
    from socioreasoner.method.render import render_draft, resize_mask
    from socioreasoner.models.grabcut import GrabCutSegmenter
    from socioreasoner.training.sft import qwen_frame_targets

    ds = load_socioseg(str(toy_city), "train")
    settings = PromptSettings(max_pixels=160 * 160)
    segmenter = GrabCutSegmenter()
    gt_drafts = sft_examples(ds, settings, seed=0, points="diagonal", stages=(2,))
    seg_drafts = sft_examples(ds, settings, seed=0, points="diagonal", stages=(2,), segmenter=segmenter)
    assert seg_drafts["prompt"] == gt_drafts["prompt"] and seg_drafts["completion"] == gt_drafts["completion"]
    differ = sum(not np.array_equal(np.asarray(a["images"][1]), np.asarray(b["images"][1]))
                 for a, b in zip(gt_drafts, seg_drafts))
    assert differ > 0  # GrabCut does not reproduce every GT mask
    record = ds[0]
    sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
    _, boxes = qwen_frame_targets(sample, mask_to_array(record["mask_label"]))
    mask = segmenter.segment(segmenter.encode([sample.sat_image])[0], [[{"box": sample.frame.box_to_original(b)}
                                                                         for b in boxes]])[0]
    expected = render_draft(sample.sat_qwen, boxes, resize_mask(mask, (sample.frame.w, sample.frame.h)))
    assert np.array_equal(np.asarray(seg_drafts[0]["images"][1]), np.asarray(expected))


def test_sft_command_line_builds_drafts_with_the_named_segmenter(tiny_models, toy_city, tmp_path, monkeypatch):
    import socioreasoner.sft as command
    import socioreasoner.training.sft as sft

    seen = {}

    def record_run(model, examples, out, **kwargs):  # stop before training: the examples are what is tested
        seen["examples"], seen["out"] = examples, out
        return out

    monkeypatch.setattr(sft, "run_sft", record_run)
    command.main(["--model", str(tiny_models["qwen2_5_vl"]), "--dataset", str(toy_city), "--out", str(tmp_path / "o"),
              "--max-pixels", str(160 * 160), "--points", "diagonal", "--draft-sam", "grabcut", "--device", "cpu"])
    settings = PromptSettings(max_pixels=160 * 160)
    from socioreasoner.models.grabcut import GrabCutSegmenter

    expected = sft_examples(load_socioseg(str(toy_city), "train"), settings, points="diagonal",
                            segmenter=GrabCutSegmenter())
    assert seen["examples"]["completion"] == expected["completion"]
    assert all(np.array_equal(np.asarray(a[1]), np.asarray(b[1]))
               for a, b in zip(seen["examples"]["images"], expected["images"]))
    with pytest.raises(SystemExit):
        command.main(["--model", "m", "--dataset", str(toy_city), "--out", "o", "--points", "centre"])
