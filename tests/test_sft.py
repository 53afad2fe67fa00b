import numpy as np

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


def test_component_points_lie_on_the_mask_strictly_inside_the_box():
    mask = np.zeros((30, 30), bool)
    mask[5:20, 8:12] = True
    rng = np.random.default_rng(0)
    for _ in range(20):
        for x, y in component_points(mask, [8, 5, 11, 19], rng):
            assert mask[y, x] and 8 < x < 11 and 5 < y < 19


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

    examples = sft_examples(load_socioseg(str(toy_city), "train"), PromptSettings(max_pixels=160 * 160), stages=(1,))
    out = run_sft(path, examples, str(tmp_path / "sft"), max_steps=3, learning_rate=1e-2, freeze_vision=True)
    trained = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(out))
    before, after = model.state_dict(), trained.state_dict()
    vision = [k for k in before if k.startswith("model.visual.")]
    language = [k for k in before if k.startswith("model.language_model.")]
    assert vision and all(torch.equal(before[k], after[k]) for k in vision)
    assert any(not torch.equal(before[k], after[k]) for k in language)
