import numpy as np
import pytest

from socioreasoner.data import load_socioseg
from socioreasoner.parsing import parse_completion
from socioreasoner.pipeline import PromptSettings
from socioreasoner.rewards import points_reward, stage1_rewards, stage2_format_reward
from socioreasoner.sft import component_points, sft_examples


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
        assert stage2_format_reward(target2, boxes) == 2.0
        assert points_reward([len(o.points) for o in parse_completion(target2).objects]) > 0.6
        assert len(s1["images"]) == len(s2["images"]) == 2
        assert "first-stage boxes" in s2["prompt"][0]["content"][2]["text"]
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
    from socioreasoner.sft import diagonal_points

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
        assert stage2_format_reward(target, parse_completion(target).boxes) == 2.0
    with pytest.raises(ValueError, match="points"):
        sft_examples(ds, settings, points="centre")


def test_sft_with_frozen_vision_tower_trains_only_the_language_model(tiny_models, toy_city, tmp_path):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.policy import freeze_vision_tower
    from socioreasoner.sft import run_sft

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
    assert PromptSettings.for_model(str(out), max_pixels=160 * 160) == settings
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out))
    before, after = model.state_dict(), trained.state_dict()
    vision = [k for k in before if k.startswith("model.visual.")]
    language = [k for k in before if k.startswith("model.language_model.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in language)
