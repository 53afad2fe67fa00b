import json

import numpy as np
import torch
from transformers import Sam2Model

from socioreasoner.models.segmenter import SamSegmenter
from socioreasoner.training.sam_finetune import _loss, component_prompts, main


def test_component_prompts_one_per_component():
    mask = np.zeros((40, 40), bool)
    mask[2:10, 2:12] = True
    mask[20:35, 25:38] = True
    prompts = component_prompts(mask, np.random.default_rng(0), jitter=0.0, points=2)
    assert [p[0] for p in prompts] == [[2.0, 2.0, 11.0, 9.0], [25.0, 20.0, 37.0, 34.0]]
    for _box, points, component in prompts:
        assert len(points) == 2 and all(component[int(y), int(x)] for x, y in points)
        assert component.sum() in (80, 195)


def test_loss_prefers_the_right_mask():
    target = torch.zeros(1, 8, 8)
    target[0, 2:6, 2:6] = 1
    good = (target * 20 - 10)[:, None].repeat(1, 3, 1, 1)
    bad = -good
    iou = torch.ones(1, 3)
    assert _loss(good, iou, target) < _loss(bad, iou, target)


def test_finetune_cli_trains_saves_and_reports(tiny_models, toy_city, tmp_path):
    out = tmp_path / "sam_ft"
    main(["--sam", str(tiny_models["sam2"]), "--dataset", str(toy_city), "--out", str(out), "--steps", "3"])
    report = json.loads((out / "finetune_report.json").read_text())
    assert 0 <= report["box_prompt_iou_before"] <= 1 and 0 <= report["box_prompt_iou_after"] <= 1
    before = Sam2Model.from_pretrained(tiny_models["sam2"]).state_dict()
    after = Sam2Model.from_pretrained(out).state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before if "mask_decoder" in k)
    segmenter = SamSegmenter(str(out), device="cpu")
    assert segmenter.input_size == (256, 256)
