"""The selection helpers of `benchmarks/grpo_fit.py` (the GRPO runs themselves are the demo's)."""

import importlib.util
import json
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def grpo_fit():
    spec = importlib.util.spec_from_file_location("grpo_fit", BENCHMARKS / "grpo_fit.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_eval(folder: Path, ious: dict[str, float]) -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({"id": k, "iou": v, "stage1_iou": 0.5}) for k, v in ious.items()]
    (folder / "per_sample.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def test_worst_prompts_are_the_lowest_final_ious_ties_by_id(grpo_fit, tmp_path):
    start = write_eval(tmp_path / "start", {"s3": 0.0, "s1": 0.9, "s2": 0.0, "s4": 0.2, "s0": 0.5})
    assert grpo_fit.worst_ids(start, 3) == ["s2", "s3", "s4"]
    after = write_eval(tmp_path / "after", {"s3": 0.4, "s1": 0.1, "s2": 0.2, "s4": 0.6, "s0": 0.5})
    # the control reads the *same* samples after training, whatever they score now
    assert grpo_fit.mean_iou(after, grpo_fit.worst_ids(start, 3)) == pytest.approx((0.2 + 0.4 + 0.6) / 3)


def test_subset_city_copies_only_the_named_train_samples(grpo_fit, toy_city, tmp_path):
    from socioreasoner.data import load_socioseg

    names = sorted(p.name for p in (toy_city / "train").iterdir())[1:3]
    city = grpo_fit.subset_city(toy_city, tmp_path / "fit", names)
    assert sorted(load_socioseg(str(city), "train")["id"]) == names
    first = grpo_fit.choose_prompts("unused", toy_city, tmp_path / "x", None, 2, "first", 64)
    assert first == sorted(p.name for p in (toy_city / "train").iterdir())[:2]
    with pytest.raises(ValueError, match="train"):
        grpo_fit.choose_prompts("unused", toy_city, tmp_path / "x", None, 99, "first", 64)
