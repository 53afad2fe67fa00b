"""The rewards, case by case from SPEC's *Reference parity* rules (each expected value derived by hand from the
rule named in the comment), plus differential tests of the linear-time structure check and answer extraction
against the reference's own regular expressions."""

import json
import math
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from socioreasoner.method.frame import QwenFrame
from socioreasoner.method.parsing import answer_block
from socioreasoner.method.rewards import (
    box_accuracy_reward,
    clean_completion,
    count_reward,
    has_think_answer_structure,
    mask_iou_reward,
    reward_gt_boxes,
    stage1_format_reward,
    stage1_rewards,
    stage2_format_reward,
    stage2_points_reward,
    stage2_rewards,
)

GT = [[10, 10, 50, 50], [100, 100, 150, 160]]
E1, E2 = math.exp(-1), math.exp(-2)


def c(answer: str, think: str = "reasoning") -> str:
    """A well-structured completion with this raw answer text."""
    return f"<think>{think}</think><answer>{answer}</answer>"


def boxes_json(boxes) -> str:
    return json.dumps([{"bbox_2d": b} for b in boxes])


def s1(text, gt=GT):
    r = stage1_rewards(text, gt)
    return r["format"], r["count"], r["box"]


# ---------- stage 1: (format, count, box) per SPEC ----------

STAGE1_CASES = {
    # exact answer: structure 1 + schema fraction 1; K = J; every pair hits IoU and L1
    "exact": (c(boxes_json(GT)), (2.0, 1.0, 1.0)),
    # empty list: structure only; K = 0 < J = 2: exp(-2·2/2); empty prediction: box 0
    "empty list": (c("[]"), (1.0, E2, 0.0)),
    # no tags at all: no answer block, so every component falls back
    "no tags": (boxes_json(GT), (0.0, 0.0, 0.0)),
    # bare JSON after the think block: no answer block
    "bare JSON": ("<think>x</think>" + boxes_json(GT), (0.0, 0.0, 0.0)),
    # the strict parser rejects these: structure only, count and box 0
    "single quotes": (c("[{'bbox_2d': [10, 10, 50, 50]}, {'bbox_2d': [100, 100, 150, 160]}]"), (1.0, 0.0, 0.0)),
    "trailing comma": (c('[{"bbox_2d": [10, 10, 50, 50]}, {"bbox_2d": [100, 100, 150, 160]},]'), (1.0, 0.0, 0.0)),
    "code fence": (c("```json\n" + boxes_json(GT) + "\n```"), (1.0, 0.0, 0.0)),
    # a dict: its items are its keys (strings, not objects): fraction 0; count and box raise: 0
    "dict instead of list": (c('{"bbox_2d": [10, 10, 50, 50]}'), (1.0, 0.0, 0.0)),
    # key aliases: key set is not {bbox_2d} (fraction 0) and item["bbox_2d"] raises (count, box 0)
    "key alias": (c('[{"bbox": [10, 10, 50, 50]}, {"box": [100, 100, 150, 160]}]'), (1.0, 0.0, 0.0)),
    # number strings: schema checks only the length (fraction 1); a (2, 4) array of strings: K = 2; the box
    # arithmetic raises on strings: 0
    "numbers as strings": (c('[{"bbox_2d": ["10", "10", "50", "50"]}, {"bbox_2d": [100, 100, 150, 160]}]'),
                           (2.0, 1.0, 0.0)),
    # null: schema ok; a (1, 4) object array, K = 1: exp(-2·1/2); comparing None raises: box 0
    "null coordinate": (c('[{"bbox_2d": [null, 10, 50, 50]}]'), (2.0, E1, 0.0)),
    # true reads as 1: [1, 10, 50, 50] against [10, 10, 50, 50]: IoU 1681/2050 = 0.82, L1 9/4: both hit;
    # the second box is exact: box (1 + 1) / 2
    "true coordinate": (c('[{"bbox_2d": [true, 10, 50, 50]}, {"bbox_2d": [100, 100, 150, 160]}]'),
                        (2.0, 1.0, 1.0)),
    # a 3-number box: schema fraction 1/2; ragged boxes are no array: count 0, box 0
    "3-number box mixed with 4": (c('[{"bbox_2d": [10, 10, 50]}, {"bbox_2d": [100, 100, 150, 160]}]'),
                                  (1.5, 0.0, 0.0)),
    # not an object among the items: fraction 0; item["bbox_2d"] raises: count 0, box 0
    "non-object item": (c('[{"bbox_2d": [10, 10, 50, 50]}, 5]'), (1.0, 0.0, 0.0)),
    # an extra key: not exactly {bbox_2d} (fraction 1/2); count and box read bbox_2d anyway
    "extra key": (c('[{"bbox_2d": [10, 10, 50, 50], "label": "a"}, {"bbox_2d": [100, 100, 150, 160]}]'),
                  (1.5, 1.0, 1.0)),
    # NaN is JSON to Python: the pair's IoU and L1 are NaN (no hit): (0 - 1) / max(1, 2)
    "NaN coordinate": (c('[{"bbox_2d": [NaN, 10, 50, 50]}]'), (2.0, E1, -0.5)),
    # surrounding whitespace breaks the full match (structure 0); the answer still parses
    "leading whitespace": (" " + c(boxes_json(GT)), (1.0, 1.0, 1.0)),
    "trailing newline": (c(boxes_json(GT)) + "\n", (1.0, 1.0, 1.0)),
    # whitespace inside the tags and between the blocks is allowed and stripped
    "whitespace inside": ("<think>x</think>\n <answer>\n " + boxes_json(GT) + " \n</answer>", (2.0, 1.0, 1.0)),
    # two answer blocks: the full match spans both (structure 1); the first block is the answer
    "two answer blocks": (c(boxes_json(GT[:1])) + "<answer>" + boxes_json(GT) + "</answer>", (2.0, E1, 0.5)),
    # a <think> inside the think text: the lazy full match still holds
    "think inside think": (c(boxes_json(GT), think="first <think> then more"), (2.0, 1.0, 1.0)),
    # empty tags: structure 1; "" is not JSON
    "empty answer text": (c(""), (1.0, 0.0, 0.0)),
}


@pytest.mark.parametrize("name", list(STAGE1_CASES))
def test_stage1_components_follow_the_reference_rules(name):
    text, expected = STAGE1_CASES[name]
    assert s1(text) == pytest.approx(expected), name


def test_reversed_corners_and_negative_coordinates_are_scored_raw():
    gt = [[10, 10, 50, 50]]
    # reversed: no intersection (min(x2) - max(x1) + 1 < 0), L1 = 40: a matched pair without hits, -1
    assert s1(c(boxes_json([[50, 50, 10, 10]])), gt) == (2.0, 1.0, -1.0)
    # x reversed only: IoU 0, L1 (40 + 0 + 40 + 0) / 4 = 20: -1 (sorted corners would score 1)
    assert s1(c(boxes_json([[50, 10, 10, 50]])), gt) == (2.0, 1.0, -1.0)
    # negative x1 not clipped: [-50, 0, 50, 50] vs [0, 0, 50, 50]: IoU 2601/5151 = 0.505, L1 50/4 = 12.5:
    # one hit, 0 (clipped to 0 it would be exact, 1)
    assert s1(c(boxes_json([[-50, 0, 50, 50]])), [[0, 0, 50, 50]])[2] == pytest.approx(0.0)


def test_150_boxes_against_100_gt():
    gt = [[40 * (i % 10), 40 * (i // 10), 40 * (i % 10) + 20, 40 * (i // 10) + 20] for i in range(100)]
    far = [[5000 + 30 * i, 5000, 5010 + 30 * i, 5010] for i in range(50)]
    fmt, count, box = s1(c(boxes_json(gt + far)), gt)
    assert fmt == 2.0
    assert count == pytest.approx(math.exp(-2 * 50 / 100))       # K = 150 counted in full
    assert box == pytest.approx(100 / 120)                         # 120 kept: 100 exact pairs, / max(120, 100)


def test_empty_ground_truth():
    # J = K = 0: count 1; an empty prediction earns no box reward; J = 0 < K: count 0, and an empty GT: box 0
    assert s1(c("[]"), []) == (1.0, 1.0, 0.0)
    assert s1(c(boxes_json([[1, 1, 5, 5]])), []) == (2.0, 0.0, 0.0)


def test_abstaining_does_not_outscore_a_wrong_guess():
    wrong = c(boxes_json([[300, 300, 320, 320], [400, 400, 420, 420]]))
    assert stage1_rewards(c("[]"), GT)["total"] < stage1_rewards(wrong, GT)["total"]


def test_box_reward_hits_and_hungarian():
    assert box_accuracy_reward([[0, 0, 10, 10]], [[100, 100, 120, 120]]) == -1.0
    assert box_accuracy_reward([[0, 0, 119, 119]], [[0, 0, 99, 99]]) == pytest.approx(0.0)  # IoU hit, L1 15
    assert box_accuracy_reward([[61, 0, 110, 50], [0, 1, 50, 50]], [[0, 0, 50, 50], [60, 0, 110, 50]]) == 1.0
    # inclusive pixels: [0, 0, 1, 1] and [1, 1, 2, 2] share 1 of 4 + 4 - 1 = 7 pixels: no IoU hit; L1 1: one hit
    assert box_accuracy_reward([[0, 0, 1, 1]], [[1, 1, 2, 2]]) == 0.0


def test_count_reward_cases():
    assert count_reward(0, 0) == 1.0
    assert count_reward(2, 0) == 0.0
    assert count_reward(0, 3) == pytest.approx(math.exp(-2))
    assert count_reward(3, 3) == 1.0


def test_format_fraction_counts_items_with_exactly_the_schema():
    text = c(json.dumps([{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [1, 2, 3]}, {"bbox_2d": [1, 2, 3, 4], "x": 1},
                         {"bbox_2d": ["a", None, {}, []]}]))
    assert stage1_format_reward(text) == pytest.approx(1 + 2 / 4)  # elements of the 4-list are not checked
    assert stage1_format_reward("junk " + text) == pytest.approx(0 + 2 / 4)


def test_scored_out_tokens_are_removed_first():
    text = c(boxes_json(GT)) + "<|im_end|><|endoftext|>"
    assert clean_completion(text) == c(boxes_json(GT))
    assert stage1_rewards(text, GT)["format"] == 2.0
    assert stage1_format_reward(text) == 1.0  # the component alone sees the raw text: no full match


# ---------- stage 2 ----------

S1_ANSWER = boxes_json(GT)
GOOD = [{"bbox_2d": GT[0], "points": [[20, 20], [30, 30]]}, {"bbox_2d": GT[1], "points": [[120, 130], [140, 150]]}]


def s2_format(items, stage1_answer=S1_ANSWER, **kw):
    return stage2_format_reward(c(items if isinstance(items, str) else json.dumps(items), **kw), stage1_answer)


def test_stage2_perfect():
    gt = np.zeros((200, 200), bool)
    gt[10:51, 10:51] = True
    assert stage2_rewards(c(json.dumps(GOOD)), S1_ANSWER, gt.copy(), gt) == \
        {"format": 2.0, "points": 1.0, "mask_iou": 1.0, "total": 4.0}


def test_stage2_points_on_the_edge_or_outside_do_not_count():
    on_edge = [{"bbox_2d": GT[0], "points": [[20, 20], [50, 30]]}, GOOD[1]]          # x == x2
    outside = [{"bbox_2d": GT[0], "points": [[5, 5]]}, GOOD[1]]
    inside = [{"bbox_2d": GT[0], "points": [[49, 11]]}, GOOD[1]]                       # strictly inside
    assert s2_format(on_edge) == 1.5 and s2_format(outside) == 1.5 and s2_format(inside) == 2.0


def test_stage2_box_must_equal_the_stage1_box_at_its_position():
    changed = [{"bbox_2d": [10, 10, 51, 50], "points": [[20, 20]]}, GOOD[1]]
    swapped = [GOOD[1], GOOD[0]]
    as_floats = [{"bbox_2d": [10.0, 10.0, 50.0, 50.0], "points": [[20, 20]]}, GOOD[1]]
    assert s2_format(changed) == 1.5 and s2_format(swapped) == 1.0 and s2_format(as_floats) == 2.0
    # the stage-1 answer is read after single quotes are made double (unlike the stage-2 answer)
    assert s2_format(GOOD, stage1_answer=S1_ANSWER.replace('"', "'")) == 2.0
    assert s2_format(GOOD, stage1_answer="") == 1.0          # stage 1 had no answer: nothing to match


def test_stage2_count_mismatch_and_missing_points():
    assert s2_format(GOOD[:1]) == 1.0                        # 1 item against 2 stage-1 boxes: structure only
    assert s2_format([{"bbox_2d": GT[0]}, {"bbox_2d": GT[1], "points": []}]) == 1.5  # no points key; [] is ok
    assert s2_format([], stage1_answer="[]") == 1.0          # an empty answer: structure only
    assert s2_format([{"bbox_2d": GT[0], "points": [[20, 20, 1]]}, GOOD[1]]) == 1.5  # a 3-number point


def test_stage2_a_bare_number_point_fails_the_whole_fraction_unless_an_earlier_point_was_outside():
    bare = [{"bbox_2d": GT[0], "points": [5]}, GOOD[1]]
    assert s2_format(bare) == 1.0                            # 5[0] raises: fraction 0
    after_outside = [{"bbox_2d": GT[0], "points": [[0, 0], 5]}, GOOD[1]]
    assert s2_format(after_outside) == 1.5                   # the outside point ends the check before 5
    assert s2_format([5, GOOD[1]]) == 1.0                    # an item that is not an object: fraction 0
    assert s2_format([{"bbox_2d": GT[0], "points": [["20", "20"]]}, GOOD[1]]) == 1.0  # str vs int raises


def test_stage2_points_reward_counts_items_with_points():
    pts = lambda n: [[20 + i, 20] for i in range(n)]  # noqa: E731
    assert stage2_points_reward(c(json.dumps(GOOD))) == 1.0
    # over all items, summing only those with a points key: (1 + 0) / 2
    assert stage2_points_reward(c(json.dumps([GOOD[0], {"bbox_2d": GT[1]}]))) == 0.5
    assert stage2_points_reward(c(json.dumps([{"points": pts(1)}, {"points": pts(5)}]))) == \
        pytest.approx((math.exp(-1 / 8) + math.exp(-9 / 8)) / 2)
    assert stage2_points_reward(c(json.dumps([{"points": []}]))) == pytest.approx(math.exp(-4 / 8))
    assert stage2_points_reward(c("[]")) == 0.0
    assert stage2_points_reward(json.dumps(GOOD)) == 0.0                    # no tag
    assert stage2_points_reward(c(json.dumps(GOOD).replace('"', "'"))) == 0.0  # not strict JSON
    assert stage2_points_reward(c('{"points": [[1, 1]]}')) == 0.0           # a dict: its key "points" raises
    assert stage2_points_reward(c('[{"points": 5}]')) == 0.0                # len(5) raises
    # the points count whatever their shape (a bare number is one "point" here)
    assert stage2_points_reward(c('[{"bbox_2d": [10, 10, 50, 50], "points": [5, [20, 20]]}]')) == 1.0
    # a string item containing "points" and a list item: Python's `in`, then indexing raises
    assert stage2_points_reward(c('["no points here"]')) == 0.0
    assert stage2_points_reward(c('["nothing"]')) == 0.0


def test_points_reward_formula():
    def points(*counts):
        return stage2_points_reward(c(json.dumps([{"points": [[20, 20]] * n} for n in counts])))

    assert points(2, 2) == 1.0
    assert points(0) == pytest.approx(math.exp(-4 / 8))
    assert points() == 0.0


def test_mask_iou_reward():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    assert mask_iou_reward(a, b) == 0.0      # empty union: 0 in the reward
    a[0:2, 0:5] = True
    b[0:2, 0:10] = True
    assert mask_iou_reward(a, b) == 0.5
    assert mask_iou_reward(a, b[:5]) == 0.0  # shapes differ: 0, as the reference


# ---------- the GT-box convention ----------

def test_gt_boxes_reference_convention_and_the_corrected_one():
    frame = QwenFrame(768, 768, 756, 756)
    inclusive = [[0, 10, 99, 109]]  # mask_to_boxes: x + w - 1
    assert reward_gt_boxes(inclusive, frame) == [[0, 10, 100, 110]]  # exclusive end, original frame
    mapped = reward_gt_boxes(inclusive, frame, "model")[0]
    assert mapped == pytest.approx([0, 10 * 756 / 768, 99 * 756 / 768, 109 * 756 / 768])
    with pytest.raises(ValueError, match="gt_box_frame"):
        reward_gt_boxes(inclusive, frame, "original")


# ---------- differential: the linear-time checks equal the reference's regexes ----------

STRUCTURE = re.compile(r"<think>.*?</think>\s*<answer>.*?</answer>", re.DOTALL)
ANSWER = re.compile(r"<answer>\s*(.*?)\s*</answer>", re.DOTALL)
WHITESPACE = "".join(chr(i) for i in range(0x3000 + 1) if chr(i).isspace())
tag_soup = st.lists(st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "<", ">", "/", "think",
                                     "answer", " ", "\n", "\t", "\u3000", "\x1c", "x", "[]", "<think", "</answer"]),
                    max_size=24).map("".join)


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag_soup)
def test_structure_check_equals_the_reference_full_match(text):
    assert has_think_answer_structure(text) == bool(STRUCTURE.fullmatch(text))


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tag_soup)
def test_answer_block_equals_the_reference_regex_group(text):
    found = ANSWER.search(text)
    assert answer_block(text) == (found.group(1) if found else None)


def test_answer_block_strips_exactly_the_regex_whitespace():
    assert all(re.fullmatch(r"\s", ch) for ch in WHITESPACE)  # the characters str.strip() removes
    text = f"<answer>{WHITESPACE}[1]{WHITESPACE}</answer>"
    assert answer_block(text) == ANSWER.search(text).group(1) == "[1]"


# ---------- ranges for arbitrary strings ----------

fragments = st.sampled_from(["<think>", "</think>", "<answer>", "</answer>", "[", "]", "{", "}", ",", '"bbox_2d"',
                             ":", '"points"', "1", "-5", "1e9", "3.5", '"7"', " ", "\n", "null", "NaN", "'", "true"])
texts = st.one_of(st.text(max_size=200), st.lists(fragments, max_size=60).map("".join))
boxes = st.lists(st.lists(st.integers(0, 300), min_size=4, max_size=4).map(
    lambda b: [min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3])]), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, gt=boxes)
def test_stage1_rewards_stay_in_range(text, gt):
    r = stage1_rewards(text, gt)
    assert 0.0 <= r["format"] <= 2.0 and 0.0 <= r["count"] <= 1.0 and -1.0 <= r["box"] <= 1.0
    assert r["total"] == pytest.approx(r["format"] + r["count"] + r["box"])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, stage1=texts, seed=st.integers(0, 1000))
def test_stage2_rewards_stay_in_range(text, stage1, seed):
    rng = np.random.default_rng(seed)
    pred, gt = rng.random((8, 8)) > 0.5, rng.random((8, 8)) > 0.5
    r = stage2_rewards(text, stage1, pred, gt)
    assert 0.0 <= r["format"] <= 2.0 and 0.0 <= r["points"] <= 1.0 and 0.0 <= r["mask_iou"] <= 1.0


def test_the_points_reward_peaks_at_the_configured_count():
    """The paper's 1/2/3-point ablation: µ moves the peak; exp(-(n - µ)²/8) per object, averaged over objects."""
    import math

    from socioreasoner.method.rewards import stage2_points_reward

    def answer(*counts):
        objs = [{"bbox_2d": [0, 0, 9, 9], "points": [[1, 1]] * n} for n in counts]
        return f"<think>t</think><answer>{json.dumps(objs)}</answer>"

    for ideal in (1, 2, 3):
        values = {n: stage2_points_reward(answer(n), ideal) for n in range(0, 6)}
        assert max(values, key=values.get) == ideal and values[ideal] == 1.0
        assert values[ideal + 1] == pytest.approx(math.exp(-1 / 8))
    assert stage2_points_reward(answer(1, 3), 1) == pytest.approx((1 + math.exp(-4 / 8)) / 2)
    assert stage2_points_reward(answer(3), 3) == 1.0 and stage2_points_reward(answer(3)) == pytest.approx(
        math.exp(-1 / 8))  # the default is the reference's µ = 2


def test_points_ideal_reaches_the_trainers_reward_and_is_checked(tmp_path):
    from socioreasoner.training.config import SocioReasonerConfig
    from socioreasoner.training.trl_rewards import Stage2Points

    three = Stage2Points(3)
    text = '<think>t</think><answer>[{"bbox_2d": [0, 0, 9, 9], "points": [[1, 1], [2, 2], [3, 3]]}]</answer>'
    completions = [[{"role": "assistant", "content": text}]]
    assert three(None, completions, stage=[2]) == [1.0] and Stage2Points()(None, completions, stage=[2])[0] < 1.0
    assert three.__name__ == "stage2_points"  # the name TRL logs the reward under
    assert SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, points_ideal=3).points_ideal == 3
    with pytest.raises(ValueError, match="points_ideal 0"):
        SocioReasonerConfig(output_dir=str(tmp_path), use_cpu=True, bf16=False, points_ideal=0)
