import pytest

from socioreasoner.parsing import MAX_OBJECTS, MAX_POINTS, parse_completion
from socioreasoner.prompts import (
    STAGE1_FIELDS,
    STAGE1_TEMPLATE,
    STAGE2_FIELDS,
    STAGE2_TEMPLATE,
    check_template,
    fill_template,
    stage1_prompt,
    stage2_prompt,
)


def test_stage1_prompt_has_two_images_map_first_and_the_query():
    messages = stage1_prompt("Jinan Zoo", 756, 756)
    content = messages[0]["content"]
    assert [c["type"] for c in content] == ["image", "image", "text"]
    text = content[2]["text"]
    assert '"Jinan Zoo"' in text and "756x756" in text
    assert text.index("first image is a digital map") < text.index("second image is a satellite")
    for must in ("<think>", "</think>", "<answer>", "</answer>", '{"bbox_2d": [x1, y1, x2, y2]}'):
        assert must in text


def test_stage2_prompt_states_stage1_boxes_and_points_schema():
    text = stage2_prompt("school", 224, 196, [[10.4, 20, 30, 40.6], [1, 2, 3, 4]])[0]["content"][2]["text"]
    assert '[{"bbox_2d": [10, 20, 30, 41]}, {"bbox_2d": [1, 2, 3, 4]}]' in text
    assert '"points": [[x, y], [x, y]]' in text and "224x196" in text


def test_templates_are_overridable_and_checked():
    check_template(STAGE1_TEMPLATE, STAGE1_FIELDS)
    check_template(STAGE2_TEMPLATE, STAGE2_FIELDS)
    custom = 'Segment {query} ({width}x{height}); answer like {"bbox_2d": [..]}'
    assert stage1_prompt("park", 10, 20, template=custom)[0]["content"][2]["text"] == \
        'Segment park (10x20); answer like {"bbox_2d": [..]}'
    with pytest.raises(ValueError, match="boxes"):
        check_template("{query} {width} {height}", STAGE2_FIELDS)
    with pytest.raises(ValueError, match="colour"):
        check_template("{query} {width} {height} {colour}", STAGE1_FIELDS)
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
    from socioreasoner.pipeline import PromptSettings
    from socioreasoner.prompts import PROMPTS_FILE, load_prompt_templates, save_prompt_templates

    short1, short2 = "{query} {width}x{height}", "{query} {width}x{height} {boxes}"
    assert load_prompt_templates(tmp_path) is None
    assert PromptSettings.for_model(str(tmp_path), max_pixels=1000) == PromptSettings(max_pixels=1000)
    save_prompt_templates(tmp_path, short1, short2)
    settings = PromptSettings.for_model(str(tmp_path), max_pixels=1000)
    assert (settings.stage1_template, settings.stage2_template, settings.max_pixels) == (short1, short2, 1000)
    assert PromptSettings.for_model("Qwen/Qwen2.5-VL-3B-Instruct").stage1_template == STAGE1_TEMPLATE

    (tmp_path / PROMPTS_FILE).write_text('{"stage1_template": "{query}", "stage2_template": "x"}')
    with pytest.raises(ValueError, match="stage1_template: missing field"):
        load_prompt_templates(tmp_path)
    (tmp_path / PROMPTS_FILE).write_text('{"stage1_template": 3}')
    with pytest.raises(ValueError, match="string fields"):
        load_prompt_templates(tmp_path)
    (tmp_path / PROMPTS_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_prompt_templates(tmp_path)
