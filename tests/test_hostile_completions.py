"""Hostile model output: parsing and rewards never raise, stay in range, and take time linear in the length.

Everything here is reachable by a policy under a 2,048-token limit (or by a broken checkpoint without one).
"""

import json
import time

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socioreasoner.method.parsing import MAX_OBJECTS, MAX_POINTS, parse_completion, parse_strict
from socioreasoner.method.rewards import stage1_rewards, stage2_rewards
from socioreasoner.training.trl_rewards import STAGE1_REWARDS, STAGE2_TEXT_REWARDS

RANGES = {"format": (0.0, 2.0), "count": (0.0, 1.0), "box": (-1.0, 1.0), "points": (0.0, 1.0),
          "mask_iou": (0.0, 1.0)}
GT_BOXES = [[10, 10, 50, 50], [60, 60, 100, 90]]
STAGE1_ANSWER = '[{"bbox_2d": [1, 2, 30, 40]}]'
MASK = np.zeros((32, 32), bool)
MASK[4:12, 4:12] = True

HUGE_NUMBERS = ["9" * 309, "1" + "0" * 4301, "-" + "9" * 400, "1e400", "-1e400", "NaN", "Infinity", "-Infinity",
                "0." + "0" * 3000 + "1", "1" * 5000 + ".5", "1e-400", "true", "null", '"12"', '"1e999"']
FRAGMENTS = ["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", ",", ":", '"bbox_2d"',
             '"points"', " ", "\n", "```json", "'", *HUGE_NUMBERS, "[1,2,3,4]", "[[1,2],[3,4]]"]


def numbers():
    return st.one_of(st.integers(), st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(HUGE_NUMBERS))


def hostile_answer():
    box = st.lists(numbers(), min_size=0, max_size=6).map(lambda xs: "[" + ",".join(map(str, xs)) + "]")
    obj = st.tuples(box, st.lists(box, max_size=4)).map(
        lambda t: '{{"bbox_2d": {}, "points": [{}]}}'.format(t[0], ",".join(t[1])))
    return st.lists(obj, max_size=8).map(lambda xs: "[" + ",".join(xs) + "]")


def hostile_completion():
    soup = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)
    structured = st.tuples(st.text(max_size=40), hostile_answer()).map(
        lambda t: f"<think>{t[0]}</think><answer>{t[1]}</answer>")
    return st.one_of(soup, structured, st.text(max_size=200))


def check_in_range(rewards: dict) -> None:
    for key, value in rewards.items():
        assert isinstance(value, float) and np.isfinite(value), (key, value)
        if key in RANGES:
            low, high = RANGES[key]
            assert low <= value <= high, (key, value)


def all_rewards(text: str) -> None:
    stage1 = stage1_rewards(text, GT_BOXES)
    check_in_range(stage1)
    check_in_range(stage2_rewards(text, STAGE1_ANSWER, MASK, MASK))
    parsed = parse_completion(text, 756, 756)
    assert len(parsed.objects) <= MAX_OBJECTS
    for obj in parsed.objects:
        assert all(np.isfinite(v) and 0 <= v <= 755 for v in obj.box)
    strict = parse_strict(text)  # what SAM2 gets by default: raw numbers, but finite and bounded in count
    assert len(strict.objects) <= MAX_OBJECTS
    for obj in strict.objects:
        assert all(np.isfinite(v) for v in obj.box) and len(obj.points) <= MAX_POINTS
        assert all(np.isfinite(v) for point in obj.points for v in point)
    # the TRL reward functions the trainer calls
    columns = {"stage": [1], "gt_boxes": [GT_BOXES], "frame": [[768, 768, 756, 756]], "stage1_answer": [STAGE1_ANSWER]}
    for fn in STAGE1_REWARDS:
        (value,) = fn(prompts=[None], completions=[text], **columns)
        assert np.isfinite(value)
    columns["stage"] = [2]
    for fn in STAGE2_TEXT_REWARDS:
        (value,) = fn(prompts=[None], completions=[text], **columns)
        assert np.isfinite(value)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_completion())
def test_thousands_of_hostile_completions_never_raise_and_stay_in_range(text):
    all_rewards(text)


def test_named_hostile_cases():
    deep = "[" * 100_000 + "]" * 100_000
    many = json.dumps([{"bbox_2d": [1, 2, 3, 4]}] * 100_000)
    cases = [
        f'<think>x</think><answer>[{{"bbox_2d": [{"9" * 309}, 1, 2, 3]}}]</answer>',   # OverflowError once
        f'<think>x</think><answer>[{{"bbox_2d": [{"1" * 4301}, 1, 2, 3]}}]</answer>',  # int-string limit
        f"<think>x</think><answer>{deep}</answer>",
        f"<think>x</think><answer>{many}</answer>",
        "<answer>" * 30_000,
        "<think>" * 20_000 + "</think>" * 20_000 + "<answer>[]</answer>",
        "x" * 3_000_000,
        '<think></think><answer>[{"bbox_2d": [NaN, Infinity, -Infinity, 1e999]}]</answer>',
        '<think></think><answer>[{"bbox_2d": [1, 2, 3, 4], "points": ' + json.dumps([[5, 5]] * 100_000) + "}]</answer>",
    ]
    for text in cases:
        all_rewards(text)


def seconds(fn, text: str, repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn(text)
        best = min(best, time.perf_counter() - start)
    return best


def test_time_is_linear_in_the_completion_length():
    """Per-char time of a long hostile completion against a 32x shorter one of the same shape: a quadratic
    parser or regex is 32x slower per char (34 s for 200 KB of repeated tags before the fix)."""
    shapes = {
        "repeated <answer>": lambda n: "<answer>" * n,
        "repeated </think>": lambda n: "<think>" + "</think> " * n + "<answer>[]</answer>",
        "no answer after </think>": lambda n: "<think>" + "</think>   " * n + "</answer>",
        "points to compare": lambda n: '<think>x</think><answer>[{"bbox_2d": [1, 2, 30, 40], "points": '
        + json.dumps([[5, 5]] * (n // 2)) + "}]</answer>",
        "unclosed answers": lambda n: "<think>x</think>" + "<answer>[" * n,
        "whitespace fence": lambda n: "<think>x</think><answer>```" + " " * (8 * n) + "x</answer>",
        "trailing commas": lambda n: "<think>x</think><answer>[" + ", " * (4 * n) + "</answer>",
        "many objects": lambda n: "<think>x</think><answer>" + json.dumps([{"bbox_2d": [1, 2, 3, 4]}] * (n // 4))
        + "</answer>",
    }
    small, factor = 1000, 32

    def work(text):
        stage1_rewards(text, GT_BOXES)
        stage2_rewards(text, STAGE1_ANSWER, MASK, MASK)

    for name, make in shapes.items():
        short, long = make(small), make(small * factor)
        ratio = (seconds(work, long) / len(long)) / (seconds(work, short) / len(short))
        assert ratio < 8, f"{name}: {ratio:.1f}x the per-char time at {factor}x the length (quadratic?)"
