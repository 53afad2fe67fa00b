"""`evaluate --backend vllm` and `predict --backend vllm`: the same prompts, masks and outputs as the HF backend
under greedy decoding (both in float32 on the CPU), the journal and metrics recording the backend."""

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from PIL import Image

from socioreasoner.evaluate import evaluate
from socioreasoner.predict import main as predict_main

ROOT = Path(__file__).resolve().parents[1]
SAME_FIELDS = ("id", "iou", "stage1_iou", "stage1_text", "stage2_text", "stage1_boxes", "final_objects",
               "stage1_format", "stage2_format")


def run_eval(policy, sam, toy_city, out, backend):
    return evaluate({"model": str(policy), "sam": str(sam), "dataset": str(toy_city), "split": "train",
                     "out": str(out), "device": "cpu", "batch_size": 4, "max_new_tokens": 128,
                     "max_pixels": 160 * 160, "backend": backend})


def journal(out):
    return [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("policy", ["sft_policy", "tiny_qwen3_vl"])
def test_evaluate_with_vllm_gives_the_hf_backends_masks(policy, tiny_models, toy_city, tmp_path, request):
    """Qwen2.5-VL (warm-started: it answers) and Qwen3-VL (random: 128 greedy tokens of babble in its 0-1000
    frame): the same texts, boxes and masks from both backends."""
    frame = "relative1000" if policy == "tiny_qwen3_vl" else "absolute"
    sam, policy = tiny_models["sam2"], request.getfixturevalue(policy)
    hf = run_eval(policy, sam, toy_city, tmp_path / "hf", "hf")
    vllm = run_eval(policy, sam, toy_city, tmp_path / "vllm", "vllm")
    assert hf["coord_frame"] == vllm["coord_frame"] == frame
    assert hf["backend"] == "hf" and vllm["backend"] == "vllm"
    hf_records, vllm_records = journal(tmp_path / "hf"), journal(tmp_path / "vllm")
    assert len(hf_records) == len(vllm_records) == 4
    if frame == "absolute":  # the warm-started policy answers: the comparison covers boxes and masks too
        assert any(r["stage1_format"] > 0 for r in hf_records)
    for a, b in zip(hf_records, vllm_records):
        assert {k: a[k] for k in SAME_FIELDS} == {k: b[k] for k in SAME_FIELDS}
        mask_a = np.array(Image.open(tmp_path / "hf" / a["mask_file"]))
        mask_b = np.array(Image.open(tmp_path / "vllm" / b["mask_file"]))
        assert np.array_equal(mask_a, mask_b), a["id"]
    assert vllm["final"]["overall"] == hf["final"]["overall"]
    settings = json.loads((tmp_path / "vllm" / "eval_settings.json").read_text())
    assert settings["backend"] == "vllm"


def test_predict_with_vllm_writes_the_schemas_result(sft_policy, tiny_models, toy_city, tmp_path):
    sample_dir = sorted((Path(toy_city) / "val").iterdir())[0]
    out = tmp_path / "pred"
    code = predict_main(["--map", str(sample_dir / "map.png"), "--sat", str(sample_dir / "sat.png"), "--query", "school", "--out", str(out),
                         "--model", str(sft_policy), "--sam", str(tiny_models["sam2"]), "--device", "cpu",
                         "--max-new-tokens", "64", "--max-pixels", str(160 * 160), "--backend", "vllm"])
    assert code == 0
    result = json.loads((out / "result.json").read_text())
    jsonschema.validate(result, json.loads((ROOT / "docs/result_schema.json").read_text()))
    assert result["backend"] == "vllm"
