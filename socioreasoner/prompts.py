"""Stage-1 and stage-2 prompts, as conversational messages for Qwen's chat template.

Each user turn carries two images — the map first, the satellite second — and a text built
from a template. Templates are plain strings with named fields (`{query}`, `{width}`,
`{height}`, and in stage 2 `{boxes}`) that a recipe or CLI can replace to match the wording a
released checkpoint was trained with. Only those `{name}` fields are substituted, so a
template can contain JSON examples without escaping braces.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

STAGE1_TEMPLATE = """\
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

STAGE2_TEMPLATE = """\
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

# Written next to a checkpoint trained with custom templates, so eval and predict prompt it the same way
PROMPTS_FILE = "socioreasoner_prompts.json"
STAGE1_FIELDS = ("query", "width", "height")
STAGE2_FIELDS = ("query", "width", "height", "boxes")
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


def check_template(template: str, required: tuple[str, ...], name: str = "template") -> None:
    """Raise if a template lacks a required field or uses an unknown one."""
    used = set(_FIELD.findall(template))
    missing = [f for f in required if f not in used]
    unknown = sorted(used - set(required))
    if missing or unknown:
        raise ValueError(f"{name}: missing field(s) {missing}, unknown field(s) {unknown}; "
                         f"allowed: {list(required)}")


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


def stage1_prompt(query: str, width: int, height: int, template: str = STAGE1_TEMPLATE) -> list[dict]:
    """Messages for stage 1: [map, satellite] + the query. Width/height: the Qwen frame."""
    return _user_turn(fill_template(template, query=query, width=width, height=height))


def stage2_prompt(query: str, width: int, height: int, stage1_boxes, template: str = STAGE2_TEMPLATE) -> list[dict]:
    """Messages for stage 2: the rendered [map, satellite] + the query + the stage-1 boxes."""
    return _user_turn(fill_template(template, query=query, width=width, height=height,
                                    boxes=format_boxes(stage1_boxes)))


def save_prompt_templates(directory: str | Path, stage1_template: str, stage2_template: str) -> Path:
    """Record the templates a checkpoint was trained with in `directory/PROMPTS_FILE`."""
    from socioreasoner.io import atomic_write_json

    return atomic_write_json(Path(directory) / PROMPTS_FILE,
                             {"stage1_template": stage1_template, "stage2_template": stage2_template})


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
    return {"stage1_template": data["stage1_template"], "stage2_template": data["stage2_template"]}
