"""Evaluation decoding: the reference's sampling in recipes/eval.yaml, exact settings passed to generate,
recorded in metrics.json; --greedy for deterministic runs."""

import json
from pathlib import Path

import pytest
import yaml

from socioreasoner.evaluate import evaluate
from socioreasoner.inference.predictor import Predictor
from socioreasoner.method.pipeline import PromptSettings

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = PromptSettings(max_pixels=160 * 160)


def test_eval_recipe_decodes_as_the_reference_evaluation():
    config = yaml.safe_load((ROOT / "recipes/eval.yaml").read_text())
    assert (config["temperature"], config["top_p"], config["top_k"], config["max_new_tokens"]) == (1.0, 0.8, 100, 2048)
    assert config["empty_rule"] == "one" and isinstance(config["seed"], int)


def test_sampling_settings_reach_generate_exactly(tiny_models):
    sampled = Predictor(str(tiny_models["qwen2_5_vl"]), "grabcut", "cpu", SETTINGS, temperature=1.0, top_p=0.8,
                        top_k=100, max_new_tokens=7)
    assert sampled.generation == {"max_new_tokens": 7, "do_sample": True, "temperature": 1.0, "top_p": 0.8,
                                  "top_k": 100}
    # top-p / top-k left out mean off, not the checkpoint's generation_config defaults (transformers: top_k 50)
    plain = Predictor(str(tiny_models["qwen2_5_vl"]), "grabcut", "cpu", SETTINGS, temperature=0.7)
    assert plain.generation["top_k"] == 0 and plain.generation["top_p"] == 1.0
    greedy = Predictor(str(tiny_models["qwen2_5_vl"]), "grabcut", "cpu", SETTINGS)
    assert greedy.generation == {"max_new_tokens": 1024, "do_sample": False}


def config(tiny_models, toy_city, out, **extra):
    return {"model": str(tiny_models["qwen2_5_vl"]), "sam": "grabcut", "dataset": str(toy_city), "split": "val",
            "out": str(out), "device": "cpu", "batch_size": 4, "max_new_tokens": 6, "max_pixels": 160 * 160,
            "max_samples": 2, **extra}


def test_metrics_record_the_decoding_and_greedy_overrides_sampling(tiny_models, toy_city, tmp_path):
    sampled = evaluate(config(tiny_models, toy_city, tmp_path / "s", temperature=1.0, top_p=0.8, top_k=100, seed=3))
    assert sampled["decoding"] == {"mode": "sample", "temperature": 1.0, "top_p": 0.8, "top_k": 100, "seed": 3,
                                   "max_new_tokens": 6, "samples_per_query": 1}
    assert json.loads((tmp_path / "s" / "metrics.json").read_text())["decoding"] == sampled["decoding"]
    greedy = evaluate(config(tiny_models, toy_city, tmp_path / "g", temperature=1.0, top_p=0.8, greedy=True))
    assert greedy["decoding"] == {"mode": "greedy", "max_new_tokens": 6}
    with pytest.raises(ValueError, match="top_p: 0.8 -> 0.5"):  # a journal is only resumed with its decoding
        evaluate(config(tiny_models, toy_city, tmp_path / "s", temperature=1.0, top_p=0.5, top_k=100, seed=3,
                        max_samples=4))


@pytest.mark.parametrize("key,value", [("top_p", 0.0), ("top_p", 1.5), ("top_k", -1), ("gt_box_frame", "original")])
def test_bad_sampling_settings_are_refused(tiny_models, toy_city, tmp_path, key, value):
    with pytest.raises(ValueError, match=key.replace("_", "-")):
        evaluate(config(tiny_models, toy_city, tmp_path / "x", temperature=1.0, **{key: value}))


def test_sam2_prompts_come_from_the_strict_parse_unless_lenient(tiny_models, toy_city, tmp_path, monkeypatch):
    """A sloppy answer (single quotes): no SAM2 prompt by default, as the reference; --lenient-parse reads it.
    The reward columns are the strict training rewards either way; metrics.json records the parse."""
    from socioreasoner.io import read_jsonl

    sloppy = "<think>x</think><answer>[{'bbox_2d': [10, 20, 60, 41], 'points': [[30, 30]]}]</answer>"
    monkeypatch.setattr(Predictor, "generate", lambda self, batch: [sloppy] * len(batch))
    strict = evaluate(config(tiny_models, toy_city, tmp_path / "strict"))
    lenient = evaluate(config(tiny_models, toy_city, tmp_path / "lenient", lenient_parse=True))
    assert (strict["parse"], lenient["parse"]) == ("strict", "lenient")
    by_parse = {name: read_jsonl(tmp_path / name / "per_sample.jsonl") for name in ("strict", "lenient")}
    assert all(r["num_stage1"] == r["num_final"] == 0 for r in by_parse["strict"])
    assert all(r["stage1_boxes"] == [] and r["final_objects"] == [] for r in by_parse["strict"])
    assert all(r["num_stage1"] == r["num_final"] == 1 for r in by_parse["lenient"])
    for a, b in zip(by_parse["strict"], by_parse["lenient"]):
        assert a["stage1_format"] == b["stage1_format"] == 1.0 and a["stage1_count"] == b["stage1_count"] == 0.0
    with pytest.raises(ValueError, match="parse: 'strict' -> 'lenient'"):  # a journal keeps its parse
        evaluate(config(tiny_models, toy_city, tmp_path / "strict", lenient_parse=True, max_samples=4))
