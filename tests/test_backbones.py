"""Qwen3-VL and Qwen3.5 backbones: the 0–1000 coordinate frame end to end, beside Qwen2.5-VL's pixels.

Hand-made cases pin the mapping in both frames (parsing clip bounds, SAM2 prompts, drafts, the stage-2
prompt, GT boxes and the 10-px L1 threshold, SFT targets); the tiny models of the real classes then run
SFT, two-stage GRPO steps, evaluate and predict on CPU.
"""

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from socioreasoner.data import load_socioseg
from socioreasoner.data.targets import mask_to_array
from socioreasoner.inference.predictor import Predictor
from socioreasoner.method.frame import QwenFrame
from socioreasoner.method.pipeline import PromptSettings, Sample, final_masks, stage_transition
from socioreasoner.method.prompts import RELATIVE_COORDINATES_NOTE, STAGE1_TEMPLATE, answer_text
from socioreasoner.method.rewards import reward_gt_boxes, stage1_box_reward, stage1_rewards
from socioreasoner.models.backbones import (
    POLICY_TYPES,
    frame_of_model,
    load_policy,
    prompt_settings_for_model,
    resolve_frame,
)
from socioreasoner.models.chat_templates import chat_template
from socioreasoner.models.grabcut import make_segmenter
from socioreasoner.models.qwen_processor import Qwen3ImageProcessor, QwenImageProcessor, load_qwen_processor
from socioreasoner.training.sft import run_sft, sft_examples

FAMILIES = ("qwen3_vl", "qwen3_5")
CLASSES = {"qwen3_vl": "Qwen3VLForConditionalGeneration", "qwen3_5": "Qwen3_5ForConditionalGeneration"}
RELATIVE = PromptSettings(max_pixels=160 * 160, coord_frame="relative1000", resize_factor=32)


@pytest.fixture(scope="module")
def tiny_qwen3(tmp_path_factory):
    from socioreasoner import testing

    return testing.tiny_qwen3(tmp_path_factory.mktemp("tiny_qwen3"), FAMILIES)


# ---------- the frame, by hand ----------

def test_absolute_and_relative_frames_map_the_same_box_to_the_same_pixels():
    absolute = QwenFrame.for_size(768, 768)                                    # Qwen2.5-VL: 756 x 756 pixels
    relative = QwenFrame.for_size(768, 768, factor=32, coords="relative1000")  # Qwen3-VL: 768 x 768, 0-1000
    assert (absolute.w, absolute.coord_w) == (756, 756) and (relative.w, relative.coord_w) == (768, 1000)
    assert absolute.box_to_original([189, 189, 567, 567]) == [192.0, 192.0, 576.0, 576.0]
    assert relative.box_to_original([250, 250, 750, 750]) == [192.0, 192.0, 576.0, 576.0]
    assert relative.point_to_original([500, 125]) == [384.0, 96.0]
    # a non-square image: x and y scale apart; out-of-range answers are clipped in the original frame
    wide = QwenFrame.for_size(640, 320, factor=32, coords="relative1000")
    assert wide.box_to_original([100, 500, 1200, 1000]) == [64.0, 160.0, 639.0, 319.0]
    assert wide.box_to_model([64, 160, 320, 240]) == [100.0, 500.0, 500.0, 750.0]
    # drafts are drawn on the resized image: model units -> resized pixels (identity for absolute frames)
    assert wide.box_to_pixels([100, 500, 500, 750]) == [64.0, 160.0, 320.0, 240.0]
    assert absolute.box_to_pixels([1, 2, 3, 4]) == [1, 2, 3, 4]
    assert wide.box_to_pixels(["a", 1, 2, 3]) == ["a", 1, 2, 3]  # not drawable: left for the renderer to skip
    assert wide.pixels_to_model([64, 160, 639, 319]) == [100, 500, 998, 997]
    with pytest.raises(ValueError, match="coords"):
        QwenFrame(10, 10, 10, 10, coords="normalised")


def test_gt_boxes_and_the_l1_threshold_in_a_relative_frame():
    frame = QwenFrame.for_size(768, 768, factor=32, coords="relative1000")  # 0.768 resized px per unit
    inclusive = [[192, 192, 575, 575]]
    assert np.allclose(reward_gt_boxes(inclusive, frame, "model"), [[250, 250, 575 / 0.768, 575 / 0.768]])
    assert reward_gt_boxes(inclusive, frame) == [[250.0, 250.0, 750.0, 750.0]]  # exclusive end, scaled
    gt = reward_gt_boxes(inclusive, frame)
    scale = frame.pixels_per_unit
    # 12 units off on every side is 9.2 px (< 10: an L1 hit), 14 units 10.8 px (a miss); IoU > 0.5 in both
    near = '<think>.</think><answer>[{"bbox_2d": [262, 262, 762, 762]}]</answer>'
    far = '<think>.</think><answer>[{"bbox_2d": [264, 264, 764, 764]}]</answer>'
    assert stage1_box_reward(near, gt, scale) == 1.0
    assert stage1_box_reward(far, gt, scale) == 0.0
    assert stage1_box_reward(near, gt) == 0.0  # read as pixels, 12 > 10: the threshold would shrink by 0.768
    assert stage1_rewards(near, gt, scale)["box"] == 1.0


def test_prompts_state_the_relative_frame_and_keep_the_reference_text_otherwise():
    from socioreasoner.method.prompts import stage1_prompt, stage2_prompt

    reference = stage1_prompt("school", 756, 756)[0]["content"][2]["text"]
    assert reference == STAGE1_TEMPLATE.replace("{query}", "school")
    relative = stage1_prompt("school", 768, 768, coords="relative1000")[0]["content"][2]["text"]
    assert relative == reference + RELATIVE_COORDINATES_NOTE and "0 to 1000" in relative
    stage2 = stage2_prompt("school", 768, 768, '[{"bbox_2d": [1, 2, 3, 4]}]', coords="relative1000")
    assert stage2[0]["content"][2]["text"].endswith(RELATIVE_COORDINATES_NOTE)


def test_sft_targets_are_written_in_the_models_frame(toy_city):
    records = load_socioseg(str(toy_city), "train")
    relative = sft_examples(records, RELATIVE, stages=(1, 2), seed=0)
    absolute = sft_examples(records, PromptSettings(max_pixels=160 * 160), stages=(1, 2), seed=0)
    for i, record in enumerate(records):
        sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], RELATIVE)
        frame = sample.frame
        gt = reward_gt_boxes(record["gt_boxes"], frame, "model")
        target = relative[2 * i]["completion"][0]["content"]
        # stage 1: the GT boxes in 0-1000 units: perfect box reward in the model frame
        assert stage1_box_reward(target, gt, frame.pixels_per_unit) == pytest.approx(1.0)
        boxes = [o["bbox_2d"] for o in json.loads(answer_text(target))]
        assert max(v for b in boxes for v in b) > 160  # not pixels of the 160-px image
        # mapped back, they cover the same pixels as the absolute model's targets
        pixel_boxes = [o["bbox_2d"] for o in json.loads(answer_text(absolute[2 * i]["completion"][0]["content"]))]
        absolute_frame = QwenFrame.for_size(*sample.sat_image.size, max_pixels=160 * 160)  # 168 x 168 pixels
        for box, pixel_box in zip(boxes, pixel_boxes):
            assert np.allclose(frame.box_to_original(box), absolute_frame.box_to_original(pixel_box), atol=1.5)
        # stage 2: keeps the stage-1 boxes, points inside them, prompt says 0-1000
        stage2 = json.loads(answer_text(relative[2 * i + 1]["completion"][0]["content"]))
        assert [o["bbox_2d"] for o in stage2] == boxes
        for obj in stage2:
            x1, y1, x2, y2 = obj["bbox_2d"]
            assert all(x1 < x < x2 and y1 < y < y2 for x, y in obj["points"])
        assert relative[2 * i + 1]["prompt"][0]["content"][2]["text"].endswith(RELATIVE_COORDINATES_NOTE)


# ---------- the tiny models of the real classes ----------

@pytest.mark.parametrize("family", FAMILIES)
def test_tiny_model_is_the_real_class_with_its_processor_and_frame(tiny_qwen3, family):
    path = str(tiny_qwen3[family])
    model = load_policy(path).eval()
    assert type(model).__name__ == CLASSES[family] and family in POLICY_TYPES
    assert frame_of_model(path) == {"coord_frame": "relative1000", "resize_factor": 32}
    processor = load_qwen_processor(path)
    assert isinstance(processor, Qwen3ImageProcessor) and processor.image_processor.patch_size == 16
    tokenizer = processor.tokenizer
    assert tokenizer.convert_tokens_to_ids("<think>") == 151667  # Qwen3-VL's vocabulary
    assert tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id
    sample = Sample.from_images("school", Image.new("RGB", (200, 150), "red"), Image.new("RGB", (200, 150), "blue"),
                                resolve_frame(PromptSettings(max_pixels=160 * 160), model.config))
    assert (sample.frame.w % 32, sample.frame.h % 32) == (0, 0) and sample.frame.coords == "relative1000"
    text = processor.apply_chat_template(sample.stage1_messages(), add_generation_prompt=True, tokenize=False)
    assert "You are a helpful assistant" not in text  # Qwen3-VL-Instruct's template has no default system turn
    inputs = processor(text=[text], images=[sample.map_qwen, sample.sat_qwen], return_tensors="pt")
    grid = inputs["image_grid_thw"]
    assert int((inputs["input_ids"] == model.config.image_token_id).sum()) == int(grid.prod(-1).sum()) // 4
    with torch.no_grad():
        assert torch.isfinite(model(**inputs).logits).all()
    # saved and read back (a directory with processor files only names its class)
    processor.save_pretrained(tiny_qwen3[family] / "processor_only")
    assert isinstance(load_qwen_processor(str(tiny_qwen3[family] / "processor_only")), Qwen3ImageProcessor)


def test_qwen2_5_vl_keeps_the_absolute_frame(tiny_models):
    path = str(tiny_models["qwen2_5_vl"])
    assert frame_of_model(path) == {"coord_frame": "absolute", "resize_factor": 28}
    assert isinstance(load_qwen_processor(path), QwenImageProcessor)
    overridden = resolve_frame(PromptSettings(coord_frame="relative1000"), load_policy(path).config)
    assert (overridden.coord_frame, overridden.resize_factor) == ("relative1000", 28)  # the config field wins
    with pytest.raises(ValueError, match="a sam2 model, but the policy"):
        load_policy(str(tiny_models["sam2"]))


def test_a_relative_answer_prompts_sam2_and_draws_the_draft_in_pixels(tiny_models, toy_city):
    record = load_socioseg(str(toy_city), "val")[0]
    sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], RELATIVE)
    assert (sample.frame.w, sample.frame.coord_w) == (160, 1000)
    segmenter = make_segmenter(str(tiny_models["sam2"]), device="cpu")
    embedding = segmenter.encode([sample.sat_image])[0]
    answer = '[{"bbox_2d": [250, 250, 750, 750], "points": [[500, 500]]}]'
    result = stage_transition(segmenter, embedding, sample, [f"<think>t</think><answer>{answer}</answer>"],
                              RELATIVE)[0]
    assert result.boxes_original == [[40.0, 40.0, 120.0, 120.0]]   # 0-1000 -> the 160-px satellite image
    assert result.mask.shape == (160, 160)
    assert answer in result.messages[0]["content"][2]["text"]      # stage 2 echoes the model's own units
    # the draft's outline is drawn at the box's pixels on the resized images (not at 250-750 px, off the image)
    changed = np.any(np.asarray(result.sat_draft, int) != np.asarray(sample.sat_qwen, int), axis=2)
    assert changed[40, 40:120].mean() > 0.9 and changed[40:120, 119].mean() > 0.9
    final = final_masks(segmenter, embedding, sample, [f"<think>t</think><answer>{answer}</answer>"], RELATIVE)[0]
    assert final.objects_original == [{"box": [40.0, 40.0, 120.0, 120.0], "points": [[80.0, 80.0]]}]
    # lenient parsing clips to the model's units (999), not to the 160-px image
    lenient = replace(RELATIVE, lenient_parse=True)
    wide = '<think>t</think><answer>[{"bbox_2d": [500, 500, 1500, 900]}]</answer>'
    assert stage_transition(segmenter, embedding, sample, [wide], lenient)[0].boxes == [[500, 500, 999, 900]]


def test_the_same_object_in_both_frames_gives_the_same_mask_iou_and_rewards_on_a_non_square_image():
    """A 300x180 pair (resized to 308x168 in Qwen2.5-VL's frame, to 288x192 in Qwen3-VL's) and one object: its
    box written in each frame's own units (rounded to integers, as a model writes them) prompts the same mask,
    so the same IoU, and earns the same stage-1 and stage-2 rewards. "The same" up to that rounding: the boxes
    agree within one original pixel, the masks at IoU >= 0.98."""
    from PIL import Image

    from socioreasoner.method.metrics import mask_iou
    from socioreasoner.method.rewards import stage2_rewards

    sat = np.full((180, 300, 3), (90, 140, 90), np.uint8)
    sat[40:130, 60:210] = (200, 80, 60)                                   # the object, 150 x 90 px
    gt = np.zeros((180, 300), bool)
    gt[40:130, 60:210] = True
    image = Image.fromarray(sat)
    segmenter = make_segmenter("grabcut")
    embedding = segmenter.encode([image])[0]
    results = {}
    bounds = {"max_pixels": 70_000}  # above both frames' sizes: neither is scaled down
    for name, settings in (("absolute", PromptSettings(**bounds)), ("relative1000", replace(RELATIVE, **bounds))):
        sample = Sample.from_images("the red parcel", image, image, settings)
        box = [round(v) for v in sample.frame.box_to_model([60, 40, 209, 129])]
        points = [[round(v) for v in sample.frame.point_to_model(p)] for p in ([100, 85], [170, 85])]
        stage1 = f'<think>t</think><answer>[{{"bbox_2d": {box}}}]</answer>'
        stage2 = f'<think>t</think><answer>[{{"bbox_2d": {box}, "points": {points}}}]</answer>'
        draft = stage_transition(segmenter, embedding, sample, [stage1], settings)[0]
        final = final_masks(segmenter, embedding, sample, [stage2], settings)[0]
        gt_boxes = reward_gt_boxes([[60, 40, 209, 129]], sample.frame)
        results[name] = {"frame": (sample.frame.w, sample.frame.h), "box": draft.boxes_original[0],
                         "mask": final.mask, "iou": mask_iou(final.mask, gt),
                         "stage1": stage1_rewards(stage1, gt_boxes, sample.frame.pixels_per_unit),
                         "stage2": stage2_rewards(stage2, answer_text(stage1), final.mask, gt)}
    a, r = results["absolute"], results["relative1000"]
    assert a["frame"] == (308, 168) and r["frame"] == (288, 192)
    assert np.allclose(a["box"], r["box"], atol=1.0)
    assert mask_iou(a["mask"], r["mask"]) >= 0.98 and abs(a["iou"] - r["iou"]) < 0.02 and a["iou"] > 0.9
    assert a["stage1"] == r["stage1"] and a["stage1"]["box"] == 1.0
    assert {k: a["stage2"][k] for k in ("format", "points")} == {k: r["stage2"][k] for k in ("format", "points")}
    assert abs(a["stage2"]["mask_iou"] - r["stage2"]["mask_iou"]) < 0.02


# ---------- the whole path on CPU, per family ----------

STAGE1_TEXTS = [
    '<think>a</think><answer>[{"bbox_2d": [100, 100, 600, 600]}]</answer>',
    "garbage",
    '<think>b</think><answer>[{"bbox_2d": [0, 0, 400, 400]}, {"bbox_2d": [500, 500, 900, 900]}]</answer>',
    "<think>c</think><answer>[]</answer>",
]
STAGE2_TEXTS = [
    '<think>x</think><answer>[{"bbox_2d": [100, 100, 600, 600], "points": [[300, 300], [400, 400]]}]</answer>',
    "<think>x</think><answer>[]</answer>",
    '<think>x</think><answer>[{"bbox_2d": [0, 0, 400, 400], "points": [[200, 200]]}]</answer>',
    "nothing",
]


def grpo_trainer(policy, tiny_models, toy_city, out, scripted: bool, monkeypatch, **overrides):
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trainer import SocioReasonerTrainer

    args = SocioReasonerConfig(**{
        "output_dir": str(out), "use_cpu": True, "bf16": False, "sam_model": str(tiny_models["sam2"]),
        "num_generations": 4, "per_device_train_batch_size": 8, "max_completion_length": 12, "max_steps": 1,
        "max_pixels": 160 * 160, "report_to": "none", "beta": 0.0, "learning_rate": 1e-2, "save_strategy": "no",
        "logging_steps": 1, **overrides})
    trainer = SocioReasonerTrainer(model=load_policy(str(policy)), args=args,
                                   train_dataset=load_socioseg(str(toy_city), "train").select(range(2)),
                                   processing_class=load_qwen_processor(str(policy)))
    if scripted:  # completions with rewards that differ within each group, so the update is not zero
        tok = trainer.processing_class.tokenizer
        calls = []

        def generation(prompt_ids, images, multimodal_fields, num_generations, has_tool_images=False):
            texts = STAGE1_TEXTS if len(calls) % 2 == 0 else STAGE2_TEXTS
            calls.append(len(prompt_ids))
            return [tok(texts[i % 4]).input_ids + [tok.eos_token_id] for i in range(len(prompt_ids))], None

        monkeypatch.setattr(trainer, "_generate_single_turn", generation)
    return trainer


def test_a_qwen3_vl_run_resumes_from_its_checkpoint_with_the_same_weights(tiny_qwen3, tiny_models, toy_city,
                                                                          tmp_path, monkeypatch):
    """Two scripted GRPO steps (rewards that vary, so the weights move), then the run resumed from checkpoint-1:
    the same weights, bit for bit; the checkpoint keeps the frame and its processor's template."""
    from safetensors.torch import load_file

    policy, out = tiny_qwen3["qwen3_vl"], tmp_path / "run"
    saving = {"max_steps": 2, "save_strategy": "steps", "save_steps": 1}
    trainer = grpo_trainer(policy, tiny_models, toy_city, out, True, monkeypatch, **saving)
    seen, compute_loss = [], trainer.compute_loss

    def recording(model, inputs, *args, **kwargs):
        seen.append({k: inputs[k] for k in ("prompt_ids", "prompt_mask", "mm_token_type_ids")})
        return compute_loss(model, inputs, *args, **kwargs)

    monkeypatch.setattr(trainer, "compute_loss", recording)
    trainer.train()
    # Qwen3-VL's M-RoPE needs mm_token_type_ids (without it generate silently goes text-only): present in both
    # stages' rows, 1 exactly on the prompt's image-pad tokens, 0 on the completion
    image_pad = trainer.processing_class.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert seen
    for batch in seen:
        prompt_len = batch["prompt_ids"].shape[1]
        types = batch["mm_token_type_ids"]
        assert torch.equal(types[:, :prompt_len] == 1, batch["prompt_ids"] == image_pad)
        assert not types[:, prompt_len:].any() and (types[:, :prompt_len] == 1).sum(1).min() > 0
    uninterrupted = {k: v.clone() for k, v in load_file(out / "checkpoint-2" / "model.safetensors").items()}
    start = load_file(policy / "model.safetensors")
    assert any(not torch.equal(start[k], uninterrupted[k]) for k in start), "GRPO changed nothing"
    assert prompt_settings_for_model(str(out / "checkpoint-1")).coord_frame == "relative1000"

    import shutil

    shutil.rmtree(out / "checkpoint-2")
    resumed = grpo_trainer(policy, tiny_models, toy_city, out, True, monkeypatch, **saving)
    resumed.train(resume_from_checkpoint=str(out / "checkpoint-1"))
    again = load_file(out / "checkpoint-2" / "model.safetensors")
    assert set(again) == set(uninterrupted) and all(torch.equal(again[k], uninterrupted[k]) for k in again)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sft_grpo_evaluate_predict_on_cpu(family, tiny_qwen3, tiny_models, toy_city, tmp_path, monkeypatch):
    from socioreasoner.evaluate import evaluate
    from socioreasoner.predict import main as predict_main

    # SFT warm start: both stages' targets in 0-1000 units; the frame travels with the checkpoint
    settings = resolve_frame(PromptSettings(max_pixels=160 * 160), load_policy(str(tiny_qwen3[family])).config)
    examples = sft_examples(load_socioseg(str(toy_city), "train"), settings, stages=(1, 2))
    sft = run_sft(str(tiny_qwen3[family]), examples, str(tmp_path / "sft"), max_steps=2, learning_rate=1e-2,
                  batch_size=2, settings=settings)
    start, warm = load_file(tiny_qwen3[family] / "model.safetensors"), load_file(sft / "model.safetensors")
    assert any(not torch.equal(start[k], warm[k]) for k in start), "SFT changed nothing"
    assert prompt_settings_for_model(str(sft)).coord_frame == "relative1000"

    # two-stage GRPO, real generation: both stages' rows in a finite loss
    trainer = grpo_trainer(sft, tiny_models, toy_city, tmp_path / "grpo", False, monkeypatch)
    assert (trainer.settings.coord_frame, trainer.settings.resize_factor) == ("relative1000", 32)
    assert trainer.train_dataset[0]["coord_frame"] == "relative1000"
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert losses and all(math.isfinite(v) for v in losses)
    assert trainer.stage_row_counts == {1: 8, 2: 8, "single": 0}
    # and with completions whose rewards vary: the parameters move
    scripted = grpo_trainer(sft, tiny_models, toy_city, tmp_path / "grpo2", True, monkeypatch)
    before = {k: v.detach().clone() for k, v in scripted.model.named_parameters()}
    scripted.train()
    entry = next(h for h in scripted.state.log_history if "loss" in h)
    assert math.isfinite(entry["loss"]) and entry["rewards/stage1_box/mean"] is not None
    changed = [k for k, v in scripted.model.named_parameters() if not torch.equal(before[k], v.detach())]
    assert changed, "GRPO changed nothing"

    # evaluate: a mask per sample at the satellite's size
    config = {"model": str(sft), "sam": str(tiny_models["sam2"]), "dataset": str(toy_city), "split": "val",
              "out": str(tmp_path / "eval"), "device": "cpu", "batch_size": 2, "max_new_tokens": 12,
              "max_pixels": 160 * 160}
    assert evaluate(config)["num_samples"] == 4
    for line in (tmp_path / "eval" / "per_sample.jsonl").read_text().splitlines():
        row = json.loads(line)
        assert mask_to_array(Image.open(tmp_path / "eval" / row["mask_file"])).shape == (160, 160)

    # predict: the result records the frame; masks at the satellite's size
    sample_dir = sorted((toy_city / "val").iterdir())[0]
    out = tmp_path / "pred"
    assert predict_main(["--map", str(sample_dir / "map.png"), "--sat", str(sample_dir / "sat.png"), "--query",
                         "school", "--model", str(sft), "--sam", str(tiny_models["sam2"]), "--out", str(out),
                         "--device", "cpu", "--max-new-tokens", "8", "--max-pixels", str(160 * 160)]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["coord_frame"] == "relative1000" and result["qwen_frame"] == [160, 160]
    assert Image.open(out / "mask.png").size == Image.open(sample_dir / "sat.png").size


def test_predictor_with_a_relative_policy_answers_in_its_frame(tiny_qwen3, tiny_models, toy_city):
    """The real predictor, scripted policy text: the answer's 0-1000 box lands on the right pixels."""

    class Scripted(Predictor):
        def generate(self, messages):
            self.num_generate_calls += 1
            obj = {"bbox_2d": [0, 500, 500, 1000]}
            if self.num_generate_calls == 2:
                obj["points"] = [[250, 750]]
            return [f"<think>s</think><answer>{json.dumps([obj])}</answer>"] * len(messages)

    predictor = Scripted(str(tiny_qwen3["qwen3_vl"]), str(tiny_models["sam2"]), "cpu",
                         PromptSettings(max_pixels=160 * 160), max_new_tokens=4)
    assert predictor.settings.coord_frame == "relative1000"  # from the model, not the settings given
    record = load_socioseg(str(toy_city), "val")[0]
    sample = Sample.from_images("school", record["map_image"], record["sat_image"], predictor.settings)
    prediction = predictor.predict([sample])[0]
    assert prediction.stage1.boxes_original == [[0.0, 80.0, 80.0, 159.0]]
    assert prediction.final.objects_original == [{"box": [0.0, 80.0, 80.0, 159.0], "points": [[40.0, 120.0]]}]
    with pytest.raises(ValueError, match="Qwen2.5-VL and Qwen3-VL"):
        Predictor(str(tiny_qwen3["qwen3_5"]), "grabcut", "cpu", backend="vllm")


def test_vllm_generation_is_refused_for_the_families_it_is_not_wired_for(tiny_qwen3, tiny_models, toy_city, tmp_path):
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trainer import SocioReasonerTrainer, check_generation_backend

    args = SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, use_vllm=True,
                               vllm_importance_sampling_correction=False, sam_model=str(tiny_models["sam2"]))
    with pytest.raises(ValueError, match="wired for Qwen2.5-VL and Qwen3-VL"):
        SocioReasonerTrainer(model=load_policy(str(tiny_qwen3["qwen3_5"])), args=args,
                             train_dataset=load_socioseg(str(toy_city), "train"),
                             processing_class=load_qwen_processor(str(tiny_qwen3["qwen3_5"])))
    check_generation_backend(load_policy(str(tiny_qwen3["qwen3_vl"])).config, use_vllm=True)  # wired: no error


TWO_IMAGE_PROMPT = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "the map; "},
                                                  {"type": "image"}, {"type": "text", "text": "find the school"}]}]
VISION = "<|vision_start|><|image_pad|><|vision_end|>"
# what the official templates give (Qwen2.5-VL adds a default system turn, Qwen3-VL none); an answer turn after it
OFFICIAL_TWO_IMAGE_TEXT = {
    "qwen2_5_vl": "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                  f"{VISION}the map; {VISION}find the school<|im_end|>\n<|im_start|>assistant\n",
    "qwen3_vl": f"<|im_start|>user\n{VISION}the map; {VISION}find the school<|im_end|>\n<|im_start|>assistant\n",
}


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_5"])
def test_the_tiny_models_chat_templates_are_trls_copies_rendering_the_official_text(family, tiny_models, tiny_qwen3):
    """Pinned: the tiny models carry TRL's shipped templates, and those render a two-image prompt (and a completed
    answer) as the official ones do; a change in TRL's copies fails here."""
    from trl import chat_template_utils

    model_dir = tiny_models["qwen2_5_vl"] if family == "qwen2_5_vl" else tiny_qwen3[family]
    processor = load_qwen_processor(str(model_dir))
    trl_copy = chat_template_utils.qwen2_5_vl_chat_template if family == "qwen2_5_vl" else \
        chat_template_utils.qwen3_vl_chat_template
    assert processor.chat_template == chat_template(family) == trl_copy
    expected = OFFICIAL_TWO_IMAGE_TEXT["qwen2_5_vl" if family == "qwen2_5_vl" else "qwen3_vl"]
    assert processor.apply_chat_template(TWO_IMAGE_PROMPT, add_generation_prompt=True, tokenize=False) == expected
    answer = [*TWO_IMAGE_PROMPT, {"role": "assistant", "content": [{"type": "text", "text": "<think>t</think>"}]}]
    assert processor.apply_chat_template(answer, tokenize=False) == expected + "<think>t</think><|im_end|>\n"


def test_a_generation_prompt_that_opens_think_is_warned_about(tiny_qwen3, caplog):
    from socioreasoner.models.backbones import warn_if_prompt_opens_think

    processor = load_qwen_processor(str(tiny_qwen3["qwen3_vl"]))
    assert not warn_if_prompt_opens_think(processor)
    processor.chat_template = chat_template("qwen3_vl").replace(r"'<|im_start|>assistant\n' }}",
                                                                r"'<|im_start|>assistant\n<think>\n' }}")
    assert processor.chat_template != chat_template("qwen3_vl")
    with caplog.at_level("WARNING"):
        assert warn_if_prompt_opens_think(processor)
    assert "opened <think>" in caplog.text


@pytest.mark.parametrize("recipe, family", [("qwen3vl_4b_1gpu_lora.yaml", "qwen3_vl"),
                                            ("qwen3vl_2b_1gpu_lora.yaml", "qwen3_vl"),
                                            ("qwen3_5_0.8b_1gpu_lora.yaml", "qwen3_5")])
def test_qwen3_recipes_parse_and_their_lora_targets_exist(recipe, family, train_script, tiny_qwen3):
    """TRL's parser takes the recipe as `recipes/train.py` does; its LoRA targets name linear layers of the family's
    language model (a misspelt one would make PEFT fail only once the real weights are loaded on a GPU)."""
    from pathlib import Path

    from trl import ModelConfig, TrlParser

    from socioreasoner.training.config import SocioReasonerConfig

    path = Path(__file__).resolve().parents[1] / "recipes" / recipe
    _, config, model_args = TrlParser((train_script.ScriptArguments, SocioReasonerConfig, ModelConfig)
                                      ).parse_args_and_config(["--config", str(path), "--bf16", "false",
                                                               "--use_cpu", "true"])  # (no GPU here)
    assert config.coord_frame == "relative1000" and not config.use_vllm and model_args.use_peft
    assert config.max_pixels == 768 * 768  # SocioSeg's 768-px images: a multiple of 32, unresized
    model = load_policy(str(tiny_qwen3[family]))
    linear = {name.rsplit(".", 1)[-1] for name, module in model.model.language_model.named_modules()
              if isinstance(module, torch.nn.Linear)}
    assert set(model_args.lora_target_modules) <= linear, set(model_args.lora_target_modules) - linear
    vision = {name.rsplit(".", 1)[-1] for name, module in model.model.visual.named_modules()
              if isinstance(module, torch.nn.Linear)}
    assert not set(model_args.lora_target_modules) & vision  # the LM only, as the Qwen2.5-VL recipe


@pytest.mark.slow
def test_train_script_trains_a_qwen3_vl_policy(tiny_qwen3, tiny_models, toy_city, tmp_path):
    """`accelerate launch recipes/train.py` with a Qwen3-VL policy: the script loads it through its own class and
    processor, and the checkpoint records the frame it was trained in."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(root / "recipes/accelerate/single.yaml"), str(root / "recipes/train.py"),
           "--config", str(root / "recipes/toy_cpu.yaml"), "--model_name_or_path", str(tiny_qwen3["qwen3_vl"]),
           "--sam_model", str(tiny_models["sam2"]), "--dataset", str(toy_city), "--output_dir", str(out),
           "--max_steps", "1", "--max_completion_length", "16", "--report_to", "none"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=root, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    history = json.loads((out / "checkpoint-1" / "trainer_state.json").read_text())["log_history"]
    assert math.isfinite(next(h for h in history if "loss" in h)["loss"])
    from socioreasoner.method.prompts import PROMPTS_FILE

    assert json.loads((out / PROMPTS_FILE).read_text())["coord_frame"] == "relative1000"
    assert type(load_policy(str(out))).__name__ == "Qwen3VLForConditionalGeneration"


def test_coord_frame_flag_overrides_the_family_frame_in_predict_and_evaluate(tiny_models, toy_city, tmp_path):
    """--coord-frame wins over the family's frame, is recorded, and a journal is not resumed across frames."""
    from socioreasoner.evaluate import evaluate
    from socioreasoner.predict import main as predict_main

    sample_dir = sorted((toy_city / "val").iterdir())[0]
    common = ["--map", str(sample_dir / "map.png"), "--sat", str(sample_dir / "sat.png"), "--query", "school",
              "--model", str(tiny_models["qwen2_5_vl"]), "--sam", "grabcut", "--device", "cpu", "--max-new-tokens", "2"]
    for frame in ("absolute", "relative1000"):
        out = tmp_path / frame
        flag = ["--coord-frame", frame] if frame == "relative1000" else []
        assert predict_main(common + ["--out", str(out)] + flag) == 0
        assert json.loads((out / "result.json").read_text())["coord_frame"] == frame
    with pytest.raises(SystemExit):  # argparse: one line naming the flag and its choices
        predict_main(common + ["--out", str(tmp_path / "bad"), "--coord-frame", "pixels"])

    config = {"model": str(tiny_models["qwen2_5_vl"]), "sam": "grabcut", "dataset": str(toy_city), "split": "val",
              "out": str(tmp_path / "eval"), "device": "cpu", "max_samples": 1, "max_new_tokens": 2}
    assert evaluate(config)["coord_frame"] == "absolute"  # Qwen2.5-VL's own
    with pytest.raises(ValueError, match="coord_frame: 'absolute' -> 'relative1000'"):
        evaluate({**config, "coord_frame": "relative1000"})
    with pytest.raises(ValueError, match="--coord-frame 'pixels'"):
        evaluate({**config, "coord_frame": "pixels", "out": str(tmp_path / "eval2")})
