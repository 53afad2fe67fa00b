"""Stage-1 and stage-2 prompts, as conversational messages for Qwen's chat template.

Each user turn carries two images — the map first, the satellite second — and a text built
from a template; no system prompt of our own (Qwen2.5-VL's chat template adds its default one,
as in the reference). The defaults are the reference code's templates, character for character.
Templates are plain strings with named fields (`{query}`, in stage 2 `{boxes}`; optionally
`{width}`/`{height}`, the Qwen frame) that a recipe or CLI can replace. Only those `{name}` fields are substituted, so a
template can contain JSON examples without escaping braces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from socioreasoner.method.parsing import ANSWER_TAGS, extract_tag

# The reference code's prompts (AMAP-ML/SocioReasoner at 7ba0c65; SPEC, *Reference parity*), character for
# character: sentences joined without spaces, the stage-2 example's missing `]`, its space before "thinking",
# "Please use English." in stage 1 only. The released checkpoint was trained on exactly this text.
REFERENCE_STAGE1_TEMPLATE = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image."
    "Please find '{query}' with bboxs."
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    "Please use English."
    "Output the bbox(es) in JSON format."
    'i.e., <think>thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2]}, '
    '{"bbox_2d": [bx3,by3,bx4,by4]}]</answer>')
REFERENCE_STAGE2_TEMPLATE = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image."
    'Now some bbox(s) and the results after SAM segmentation for "{query}" have been rendered on these two images.'
    "The found bbox(s) are: {boxes}."
    "Please add some points appropriately to each bbox to better represent the area of interest."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags."
    'i.e., <think> thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2], '
    '"points": [[px1,py1],[px2,py2],[px3,py3]]}, {"bbox_2d": [bx3,by3,bx4,by4], '
    '"points": [[px4,py4],[px5,py5],[px6,py6]}]</answer>')

# This project's earlier default wording (it states the image size): a named alternative. Checkpoints trained
# with it saved it beside them, and load it from there.
DESCRIPTIVE_STAGE1_TEMPLATE = """\
The first image is a digital map and the second image is a satellite image of the same urban area \
({width}x{height} pixels). The map shows place names and land-use colours; the satellite image shows \
what is on the ground.
Find every separate region of the satellite image that belongs to: "{query}".
First reason about the map labels, the colours and the satellite appearance inside <think> </think> \
tags. Then give the answer inside <answer> </answer> tags: a JSON list with one object per region, \
each a bounding box in absolute pixel coordinates of the satellite image:
[{"bbox_2d": [x1, y1, x2, y2]}, {"bbox_2d": [x1, y1, x2, y2]}]
Example: <think>The map labels the school in the upper left; its grounds are the block under the \
label.</think><answer>[{"bbox_2d": [35, 40, 210, 188]}]</answer>"""

DESCRIPTIVE_STAGE2_TEMPLATE = """\
The first image is the digital map and the second image is the satellite image ({width}x{height} \
pixels) of the same urban area. Both now show your first answer for "{query}": your boxes are \
outlined and the mask they produced is shaded.
Your first-stage boxes were: {boxes}
Check each region and refine it: keep every box exactly as given and add one to three positive \
points strictly inside the box, on the target, where the shaded mask is missing or wrong.
First reason inside <think> </think> tags. Then answer inside <answer> </answer> tags with a JSON \
list, one object per box, in the same order:
[{"bbox_2d": [x1, y1, x2, y2], "points": [[x, y], [x, y]]}]
Example: <think>The shaded mask misses the sports field of the school.</think><answer>\
[{"bbox_2d": [35, 40, 210, 188], "points": [[80, 90], [150, 140]]}]</answer>"""

# The paper's "w/o reflection" ablation: one stage that answers boxes and points at once. Neither the paper nor the
# reference code gives its prompt; this one is the reference's stage-1 text asking for stage 2's answer schema (its
# example with the closing `]` the reference's stage-2 example lacks). docs/reference_parity.md records the choice.
SINGLE_STAGE_TEMPLATE = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image."
    "Please find '{query}' with bboxs and points."
    "Compare the difference between object(s) and find the most closely matched object(s)."
    "Output the thinking process in <think> </think> and final answer in <answer> </answer> tags. "
    "Please use English."
    "Output the bbox(es) and some points inside each bbox in JSON format."
    'i.e., <think>thinking process here </think><answer>[{"bbox_2d": [bx1,by1,bx2,by2], '
    '"points": [[px1,py1],[px2,py2],[px3,py3]]}, {"bbox_2d": [bx3,by3,bx4,by4], '
    '"points": [[px4,py4],[px5,py5],[px6,py6]]}]</answer>')
# The paper's SFT baseline (its A.2.3): the single-stage task without chain-of-thought, the answer alone.
SFT_BASELINE_TEMPLATE = (
    "You will be given two images. The first is a map and the second is a corresponding satellite image."
    "Please find '{query}' with bboxs and points."
    "Output the final answer in <answer> </answer> tags, the bbox(es) and some points inside each bbox in JSON "
    'format.i.e., <answer>[{"bbox_2d": [bx1,by1,bx2,by2], "points": [[px1,py1],[px2,py2],[px3,py3]]}]</answer>')

STAGE1_TEMPLATE = REFERENCE_STAGE1_TEMPLATE
STAGE2_TEMPLATE = REFERENCE_STAGE2_TEMPLATE
PROMPT_STYLES = {
    "reference": (REFERENCE_STAGE1_TEMPLATE, REFERENCE_STAGE2_TEMPLATE),
    "descriptive": (DESCRIPTIVE_STAGE1_TEMPLATE, DESCRIPTIVE_STAGE2_TEMPLATE),
}
# What stage 2's {boxes} holds: "answer" — the stage-1 completion's raw <answer> content, stripped (the
# reference; "" without an answer tag) — or "parsed" — the parsed boxes re-serialised (`format_boxes`), what
# checkpoints saved before this choice existed were trained with.
STAGE2_BOXES_MODES = ("answer", "parsed")
# How a run reaches its final mask: the method's two stages (boxes, then boxes + points on the rendered draft), or
# one stage answering boxes + points at once (`SINGLE_STAGE_TEMPLATE`: the paper's "w/o reflection" ablation and
# its SFT baseline).
TWO_STAGE, SINGLE_STAGE = "two_stage", "single_stage"
ROLLOUTS = (TWO_STAGE, SINGLE_STAGE)

# Appended to both stages' text for Qwen3-VL / Qwen3.5, which ground in relative coordinates (`frame.RELATIVE1000`);
# the reference's templates (written for Qwen2.5-VL's pixels) say nothing of the frame.
RELATIVE_COORDINATES_NOTE = (" All coordinates (boxes and points) are relative: integers from 0 to 1000 across the "
                             "image's width and height.")

# Written next to a checkpoint trained with custom templates, so eval and predict prompt it the same way
PROMPTS_FILE = "socioreasoner_prompts.json"
# (required, optional) fields of each template
STAGE1_FIELDS = (("query",), ("width", "height"))
STAGE2_FIELDS = (("query", "boxes"), ("width", "height"))
_FIELD = re.compile(r"\{([a-z_]+)\}")


MAX_QUERY_CHARS = 1000
# Qwen's special tokens are written <|name|>; in a query they would be tokenised as control tokens (an
# <|image_pad|> there desynchronises the image-token count from the images given)
_SPECIAL_TOKEN = re.compile(r"<\|[A-Za-z0-9_]+\|>")


def check_query(query, where: str = "query") -> str:
    """The query stripped; a ValueError naming `where` if it is empty, too long or carries special tokens."""
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"{where}: empty query; expected a name, class or function such as 'school'")
    if len(query) > MAX_QUERY_CHARS:
        raise ValueError(f"{where}: {len(query)} characters; a query has at most {MAX_QUERY_CHARS}")
    special = _SPECIAL_TOKEN.search(query)
    if special:
        raise ValueError(f"{where}: contains the model's special token {special.group(0)!r}")
    return query.strip()


def check_template(template: str, fields: tuple[tuple[str, ...], tuple[str, ...]], name: str = "template") -> None:
    """Raise if a template lacks a required field or uses one that is neither required nor optional."""
    required, optional = fields
    used = set(_FIELD.findall(template))
    missing = [f for f in required if f not in used]
    unknown = sorted(used - set(required) - set(optional))
    if missing or unknown:
        raise ValueError(f"{name}: missing field(s) {missing}, unknown field(s) {unknown}; "
                         f"required: {list(required)}, optional: {list(optional)}")


def read_template(value: str) -> str:
    """A template given on a command line: the text itself, or `@path` for a file's text (UTF-8)."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            return path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise ValueError(f"{path}: cannot read the template ({type(err).__name__})") from None
    return value


def fill_template(template: str, **fields) -> str:
    """Substitute `{name}` fields; any other brace text is left as it is."""
    def replace(match):
        key = match.group(1)
        return str(fields[key]) if key in fields else match.group(0)

    return _FIELD.sub(replace, template)


def format_boxes(boxes) -> str:
    """Stage-1 boxes as the JSON the model is asked to echo: integers, stage-1 schema."""
    return json.dumps([{"bbox_2d": [int(round(v)) for v in box]} for box in boxes])


def _user_turn(text: str) -> list[dict]:
    return [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": text}]}]


def with_coordinate_note(text: str, coords: str = "absolute") -> str:
    """The prompt text, plus `RELATIVE_COORDINATES_NOTE` for a model whose coordinates are relative (0–1000)."""
    return text if coords == "absolute" else text + RELATIVE_COORDINATES_NOTE


def stage1_prompt(query: str, width: int, height: int, template: str = STAGE1_TEMPLATE,
                  coords: str = "absolute") -> list[dict]:
    """Messages for stage 1: [map, satellite] + the query. Width/height: the Qwen frame; `coords`: the model's
    coordinate frame (`frame.COORD_FRAMES`)."""
    return _user_turn(with_coordinate_note(fill_template(template, query=query, width=width, height=height), coords))


def answer_text(completion: str) -> str:
    """A completion's raw `<answer>` content, stripped; "" without one (the reference's stage-2 {boxes})."""
    answer = extract_tag(completion, ANSWER_TAGS)
    return answer.strip() if answer is not None else ""


def stage2_prompt(query: str, width: int, height: int, boxes, template: str = STAGE2_TEMPLATE,
                  coords: str = "absolute") -> list[dict]:
    """Messages for stage 2: the rendered [map, satellite] + the query + the stage-1 boxes — a text used as it is
    (the raw answer, `answer_text`), or a list of boxes, written with `format_boxes`."""
    text = boxes if isinstance(boxes, str) else format_boxes(boxes)
    return _user_turn(with_coordinate_note(
        fill_template(template, query=query, width=width, height=height, boxes=text), coords))


def check_rollout(value: str, name: str = "rollout") -> str:
    if value not in ROLLOUTS:
        raise ValueError(f"{name} {value!r}: expected one of {ROLLOUTS}")
    return value


def save_prompt_templates(directory: str | Path, stage1_template: str, stage2_template: str,
                          stage2_boxes: str = "answer", coord_frame: str | None = None, rollout: str = TWO_STAGE,
                          single_stage_template: str = SINGLE_STAGE_TEMPLATE) -> Path:
    """Record the templates (the stage-2 {boxes} mode, the coordinate frame, and for a single-stage checkpoint its
    rollout and template) a checkpoint was trained with in `directory/PROMPTS_FILE`."""
    from socioreasoner.io import atomic_write_json

    record = {"stage1_template": stage1_template, "stage2_template": stage2_template, "stage2_boxes": stage2_boxes}
    if coord_frame is not None:
        record["coord_frame"] = coord_frame
    if rollout == SINGLE_STAGE:  # two-stage files keep their earlier shape
        record.update(rollout=rollout, single_stage_template=single_stage_template)
    return atomic_write_json(Path(directory) / PROMPTS_FILE, record)


def load_prompt_templates(model: str | Path) -> dict[str, str] | None:
    """The templates saved with a local checkpoint (`save_prompt_templates`), or None if it has none."""
    path = Path(model) / PROMPTS_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in ("stage1_template", "stage2_template")):
        raise ValueError(f"{path}: expected an object with string fields 'stage1_template' and 'stage2_template'")
    check_template(data["stage1_template"], STAGE1_FIELDS, f"{path}: stage1_template")
    check_template(data["stage2_template"], STAGE2_FIELDS, f"{path}: stage2_template")
    boxes = data.get("stage2_boxes", "parsed")  # files from before the field: trained on re-serialised boxes
    if boxes not in STAGE2_BOXES_MODES:
        raise ValueError(f"{path}: stage2_boxes {boxes!r}; expected one of {STAGE2_BOXES_MODES}")
    saved = {"stage1_template": data["stage1_template"], "stage2_template": data["stage2_template"],
             "stage2_boxes": boxes}
    if "coord_frame" in data:
        if data["coord_frame"] not in ("absolute", "relative1000"):
            raise ValueError(f"{path}: coord_frame {data['coord_frame']!r}; expected 'absolute' or 'relative1000'")
        saved["coord_frame"] = data["coord_frame"]
    if "rollout" in data:
        saved["rollout"] = check_rollout(data["rollout"], f"{path}: rollout")
        single = data.get("single_stage_template")
        if not isinstance(single, str):
            raise ValueError(f"{path}: a single_stage rollout needs a string field 'single_stage_template'")
        check_template(single, STAGE1_FIELDS, f"{path}: single_stage_template")
        saved["single_stage_template"] = single
    return saved
