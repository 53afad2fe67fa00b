import numpy as np
import pytest

from socioreasoner.method.parsing import MAX_OBJECTS, MAX_POINTS, parse_completion
from socioreasoner.method.prompts import (
    PROMPT_STYLES,
    STAGE1_FIELDS,
    STAGE1_TEMPLATE,
    STAGE2_FIELDS,
    STAGE2_TEMPLATE,
    answer_text,
    check_template,
    fill_template,
    stage1_prompt,
    stage2_prompt,
)

# SPEC, *Reference parity*: the reference code's prompts, as its code builds them for query "school" and the
# stage-1 answer below (written out here, not derived from our templates)
REFERENCE_STAGE1_SCHOOL = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image.Please "
    "find 'school' with bboxs.Compare the difference between object(s) and find the most closely matched "
    "object(s).Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    "Please use English.Output the bbox(es) in JSON format.i.e., <think>thinking process here </think><answer>"
    '[{"bbox_2d": [bx1,by1,bx2,by2]}, {"bbox_2d": [bx3,by3,bx4,by4]}]</answer>')
REFERENCE_STAGE2_SCHOOL = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image.Now some "
    'bbox(s) and the results after SAM segmentation for "school" have been rendered on these two images.The found '
    'bbox(s) are: [{"bbox_2d": [10.5,20,300,41]}].Please add some points appropriately to each bbox to better '
    "represent the area of interest.Output the thinking process in <think> </think> and final answer in <answer> "
    "</answer> tags.i.e., <think> thinking process here </think><answer>[{\"bbox_2d\": [bx1,by1,bx2,by2], "
    '"points": [[px1,py1],[px2,py2],[px3,py3]]}, {"bbox_2d": [bx3,by3,bx4,by4], "points": '
    "[[px4,py4],[px5,py5],[px6,py6]}]</answer>")
STAGE1_COMPLETION = '<think>the map</think><answer>\n [{"bbox_2d": [10.5,20,300,41]}] \n</answer>'


def test_default_prompts_are_the_reference_text():
    messages = stage1_prompt("school", 756, 756)
    content = messages[0]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]  # map first, then the satellite
    assert content[2]["text"] == REFERENCE_STAGE1_SCHOOL
    # stage 2 quotes the stage-1 answer's raw text (stripped), not a re-serialisation of the parsed boxes
    text = stage2_prompt("school", 756, 756, answer_text(STAGE1_COMPLETION))[0]["content"][2]["text"]
    assert text == REFERENCE_STAGE2_SCHOOL
    assert answer_text("<think>no answer</think>") == ""


def test_chat_template_renders_the_reference_layout(tiny_models):
    """System prompt (Qwen's default), image tokens, text: byte for byte what the reference's processor renders."""
    from socioreasoner.models.qwen_processor import load_qwen_processor

    processor = load_qwen_processor(str(tiny_models["qwen2_5_vl"]))
    images = "<|vision_start|><|image_pad|><|vision_end|>" * 2
    for messages, text in ((stage1_prompt("school", 756, 756), REFERENCE_STAGE1_SCHOOL),
                           (stage2_prompt("school", 756, 756, answer_text(STAGE1_COMPLETION)), REFERENCE_STAGE2_SCHOOL)):
        rendered = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert rendered == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                            f"{images}{text}<|im_end|>\n<|im_start|>assistant\n")


def test_the_descriptive_templates_remain_a_named_alternative():
    stage1, stage2 = PROMPT_STYLES["descriptive"]
    text = stage1_prompt("Jinan Zoo", 756, 756, stage1)[0]["content"][2]["text"]
    assert '"Jinan Zoo"' in text and "756x756" in text
    text = stage2_prompt("school", 224, 196, [[10.4, 20, 30, 40.6], [1, 2, 3, 4]], stage2)[0]["content"][2]["text"]
    assert '[{"bbox_2d": [10, 20, 30, 41]}, {"bbox_2d": [1, 2, 3, 4]}]' in text and "224x196" in text


def test_templates_are_overridable_and_checked():
    check_template(STAGE1_TEMPLATE, STAGE1_FIELDS)
    check_template(STAGE2_TEMPLATE, STAGE2_FIELDS)
    custom = 'Segment {query} ({width}x{height}); answer like {"bbox_2d": [..]}'
    assert stage1_prompt("park", 10, 20, template=custom)[0]["content"][2]["text"] == \
        'Segment park (10x20); answer like {"bbox_2d": [..]}'
    check_template("find {query}", STAGE1_FIELDS)  # width / height are optional
    with pytest.raises(ValueError, match="boxes"):
        check_template("{query} {width} {height}", STAGE2_FIELDS)
    with pytest.raises(ValueError, match="colour"):
        check_template("{query} {width} {height} {colour}", STAGE1_FIELDS)
    with pytest.raises(ValueError, match="query"):
        check_template("find it", STAGE1_FIELDS)
    assert fill_template("{a} {b}", a=1) == "1 {b}"


def test_parse_well_formed_completion():
    text = '<think>the map says school</think><answer>[{"bbox_2d": [1, 2, 30, 40], "points": [[5, 6]]}]</answer>'
    parsed = parse_completion(text)
    assert parsed.think == "the map says school"
    assert parsed.boxes == [[1.0, 2.0, 30.0, 40.0]]
    assert parsed.objects[0].points == [[5.0, 6.0]]
    assert parsed.error is None


@pytest.mark.parametrize("answer", [
    "[{'bbox_2d': [1, 2, 30, 40]},]",                 # single quotes, trailing comma
    '  ```json\n[{"bbox_2d": ["1", "2", "30", "40"]}]\n```  ',  # fence, numbers as strings
    '{"bbox_2d": [1, 2, 30, 40]}',                    # one object, not a list
    'Here it is: [{"bbox_2d": [30, 40, 1, 2]}] done',  # prose around, reversed corners
])
def test_parse_is_lenient(answer):
    parsed = parse_completion(f"<think>x</think><answer>{answer}</answer>")
    assert parsed.boxes == [[1.0, 2.0, 30.0, 40.0]]


def test_parse_malformed_is_not_an_error():
    for text in ("no tags at all", "<answer>[{bbox_2d: oops</answer>", "<think>t</think><answer></answer>",
                 "<answer>[1, 2, 3]</answer>", '<answer>[{"bbox_2d": [1, 2, "x", 4]}]</answer>',
                 '<answer>[{"bbox_2d": [1, 2, NaN, 4]}]</answer>', '<answer>[{"bbox_2d": [1, 2, 3]}]</answer>'):
        parsed = parse_completion(text)
        assert parsed.objects == []
    assert parse_completion("no tags").error == "no <answer> block"


def test_parse_reads_a_truncated_answer():
    parsed = parse_completion('<think>a</think><answer>[{"bbox_2d": [1, 2, 3, 4]}]')
    assert parsed.boxes == [[1.0, 2.0, 3.0, 4.0]]


def test_parse_caps_and_clips():
    points = ",".join(["[1, 1]"] * 50)
    many = ",".join(f'{{"bbox_2d": [0, 0, 5, 5], "points": [{points}]}}' for _ in range(500))
    parsed = parse_completion(f"<answer>[{many}]</answer>", width=100, height=50)
    assert len(parsed.objects) == MAX_OBJECTS
    assert all(len(o.points) == MAX_POINTS for o in parsed.objects)
    clipped = parse_completion('<answer>[{"bbox_2d": [-20, 10, 1e9, 80], "points": [[500, -3]]}]</answer>',
                               width=100, height=50)
    assert clipped.boxes == [[0.0, 10.0, 99.0, 49.0]]
    assert clipped.objects[0].points == [[99.0, 0.0]]


def test_prompt_templates_saved_with_a_checkpoint_are_used_for_it(tmp_path):
    from socioreasoner.method.pipeline import PromptSettings
    from socioreasoner.method.prompts import PROMPTS_FILE, load_prompt_templates, save_prompt_templates
    from socioreasoner.models.backbones import prompt_settings_for_model

    short1, short2 = "{query} {width}x{height}", "{query} {width}x{height} {boxes}"
    assert load_prompt_templates(tmp_path) is None
    assert prompt_settings_for_model(str(tmp_path), max_pixels=1000) == PromptSettings(max_pixels=1000)
    save_prompt_templates(tmp_path, short1, short2)
    settings = prompt_settings_for_model(str(tmp_path), max_pixels=1000)
    assert (settings.stage1_template, settings.stage2_template, settings.max_pixels) == (short1, short2, 1000)
    assert prompt_settings_for_model("Qwen/Qwen2.5-VL-3B-Instruct").stage1_template == STAGE1_TEMPLATE

    (tmp_path / PROMPTS_FILE).write_text('{"stage1_template": "{query}", "stage2_template": "x"}')
    with pytest.raises(ValueError, match="stage2_template: missing field"):
        load_prompt_templates(tmp_path)
    (tmp_path / PROMPTS_FILE).write_text('{"stage1_template": 3}')
    with pytest.raises(ValueError, match="string fields"):
        load_prompt_templates(tmp_path)
    (tmp_path / PROMPTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_prompt_templates(tmp_path)


def test_stage_transition_quotes_the_raw_answer_or_the_parsed_boxes(toy_city, tmp_path):
    from socioreasoner.data import load_socioseg
    from socioreasoner.method.pipeline import PromptSettings, Sample, stage_transition
    from socioreasoner.method.prompts import PROMPTS_FILE, load_prompt_templates, save_prompt_templates
    from socioreasoner.models.grabcut import GrabCutSegmenter

    row = load_socioseg(str(toy_city), "val")[0]
    completion = '<think>x</think><answer> [{"bbox_2d": [10.5, 20, 60, 41]}]</answer>'
    segmenter = GrabCutSegmenter()
    for mode, quoted in (("answer", '[{"bbox_2d": [10.5, 20, 60, 41]}]'), ("parsed", '[{"bbox_2d": [10, 20, 60, 41]}]')):
        settings = PromptSettings(max_pixels=160 * 160, stage2_boxes=mode)
        sample = Sample.from_images(row["problem"], row["map_image"], row["sat_image"], settings)
        embedding = segmenter.encode([sample.sat_image])[0]
        result = stage_transition(segmenter, embedding, sample, [completion], settings)[0]
        assert f"The found bbox(s) are: {quoted}." in result.messages[0]["content"][2]["text"], mode
    # the mode is saved beside a checkpoint; a file from before it existed means "parsed" (how it was trained)
    save_prompt_templates(tmp_path, STAGE1_TEMPLATE, STAGE2_TEMPLATE, "answer")
    assert load_prompt_templates(tmp_path)["stage2_boxes"] == "answer"
    (tmp_path / PROMPTS_FILE).write_text('{"stage1_template": "{query}", "stage2_template": "{query} {boxes}"}')
    assert load_prompt_templates(tmp_path)["stage2_boxes"] == "parsed"


# ---------- the strict parse (SAM2's prompts and the draft's boxes, as the reference reads them) ----------

def test_strict_objects_follow_the_reference_prompt_rule():
    from socioreasoner.method.parsing import parse_strict

    def objects(answer):
        return [(o.box, o.points) for o in parse_strict(f"<think>x</think><answer>{answer}</answer>").objects]

    # raw numbers: not clipped, corners not sorted; points [p[0], p[1]] (a third number dropped)
    assert objects('[{"bbox_2d": [50, 40, -5, 900], "points": [[1, 2, 9], [3, 4]]}]') == \
        [([50, 40, -5, 900], [[1, 2], [3, 4]])]
    # items skipped: not an object, no 4-list box, a point the reference cannot read (bare number, 1 number,
    # not numbers), non-finite numbers; the others kept
    kept = '{"bbox_2d": [1, 2, 3, 4]}'
    for bad in ('5', '{"bbox": [1, 2, 3, 4]}', '{"bbox_2d": [1, 2, 3]}', '{"bbox_2d": [1, 2, 3, 4], "points": [7]}',
                '{"bbox_2d": [1, 2, 3, 4], "points": [[7]]}', '{"bbox_2d": ["1", 2, 3, 4]}',
                '{"bbox_2d": [1, 2, 3, 4], "points": [["1", "2"]]}', '{"bbox_2d": [NaN, 2, 3, 4]}',
                '{"bbox_2d": [1, 2, 3, 4], "points": null}'):
        assert objects(f"[{bad}, {kept}]") == [([1, 2, 3, 4], [])], bad
    # what the lenient parser accepts and the strict one does not: no objects, and the reason
    for answer, error in (("[{'bbox_2d': [1, 2, 3, 4]}]", "answer is not JSON"), ('{"bbox_2d": [1, 2, 3, 4]}',
                          "answer is not a JSON list"), ('```json\n[{"bbox_2d": [1, 2, 3, 4]}]\n```', "answer is not JSON")):
        parsed = parse_strict(f"<answer>{answer}</answer>")
        assert parsed.objects == [] and parsed.error == error
        assert parse_completion(f"<answer>{answer}</answer>").boxes == [[1, 2, 3, 4]]
    assert parse_strict('[{"bbox_2d": [1, 2, 3, 4]}]').error == "no <answer> block"


def test_draft_boxes_are_the_reference_render_boxes():
    from socioreasoner.method.parsing import draft_boxes

    assert draft_boxes('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": [1, 2, 3]}, 7, {"box": [1, 1, 2, 2]}]') == [[1, 2, 3, 4]]
    assert draft_boxes('[{"bbox_2d": [1, 2, 3, 4]}, {"bbox_2d": 5}]') == []  # len(5) raises: no boxes at all
    assert draft_boxes("[{'bbox_2d': [1, 2, 3, 4]}]") == [] and draft_boxes("") == []
    assert draft_boxes('{"bbox_2d": [1, 2, 3, 4]}') == []


def test_sam2_gets_the_strict_parse_by_default_and_the_lenient_one_on_request(toy_city):
    from socioreasoner.data import load_socioseg
    from socioreasoner.method.pipeline import PromptSettings, Sample, final_masks, stage_transition
    from socioreasoner.models.grabcut import GrabCutSegmenter

    row = load_socioseg(str(toy_city), "val")[0]
    sloppy = "<think>x</think><answer>[{'bbox_2d': [10, 20, 60, 41], 'points': [[30, 30]]}]</answer>"
    segmenter = GrabCutSegmenter()
    for lenient, expected in ((False, 0), (True, 1)):
        settings = PromptSettings(max_pixels=160 * 160, lenient_parse=lenient)
        assert settings.parse == ("lenient" if lenient else "strict")
        sample = Sample.from_images(row["problem"], row["map_image"], row["sat_image"], settings)
        embedding = segmenter.encode([sample.sat_image])[0]
        stage1 = stage_transition(segmenter, embedding, sample, [sloppy], settings)[0]
        final = final_masks(segmenter, embedding, sample, [sloppy], settings)[0]
        assert len(stage1.boxes) == len(final.parsed.objects) == expected
        assert bool(stage1.mask.any()) == bool(final.mask.any()) == bool(expected)
        drafted = not np.array_equal(np.asarray(stage1.sat_draft), np.asarray(sample.sat_qwen))
        assert drafted == bool(expected)  # the draft shows what SAM2 got
