"""Reading a model completion: think text, answer text, and the objects it names.

Two readings, as in SPEC *Reference parity*:

- strict (`parse_strict`, the default everywhere): the first `<answer>` block, stripped, through
  `json.loads`, and the reference's rule for SAM2 prompts — dict items with a 4-element
  `bbox_2d` and `points` whose items give `[p[0], p[1]]`, raw numbers (no clipping, no corner
  sorting); anything else is skipped. Rewards (`socioreasoner.method.rewards`) read the same answer text
  with their own per-component rules.
- lenient (`parse_completion`, opt-in: `lenient_parse`, `--lenient-parse`): surrounding code
  fences, single quotes, trailing commas, numbers written as strings, a single object instead of
  a list; coordinates clipped to the image and reversed corners put in order. For a user who wants
  a mask from a sloppy answer; it never earns reward.

Both never evaluate code and cap what a completion can make us allocate: at most `MAX_OBJECTS`
objects and `MAX_POINTS` points per object, at most `MAX_ANSWER_CHARS` of answer text.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field

MAX_OBJECTS = 120
MAX_POINTS = 16
MAX_ANSWER_CHARS = 200_000  # far above any sane answer; bounds the JSON work per completion

_THINK = ("<think>", "</think>")
ANSWER_TAGS = _ANSWER = ("<answer>", "</answer>")
_TRAILING_COMMA = re.compile(r",\s*([\]}])")
# what the JSON parser can raise on hostile text: malformed (JSONDecodeError is a ValueError), an integer past
# Python's int-string limit (ValueError), nesting past the recursion limit
JSON_ERRORS = (ValueError, RecursionError)
_BOX_KEYS = ("bbox_2d", "bbox", "box")


@dataclass
class ParsedObject:
    box: list[float]
    points: list[list[float]] = field(default_factory=list)


@dataclass
class ParsedCompletion:
    think: str | None
    answer: str | None
    objects: list[ParsedObject]
    error: str | None = None  # why objects could not be read (malformed output is not an exception)

    @property
    def boxes(self) -> list[list[float]]:
        return [o.box for o in self.objects]


def extract_tag(text: str, tag: tuple[str, str]) -> str | None:
    """What `re.search("<t>(.*?)</t>", text, DOTALL).group(1)` returns, in linear time: the text between the
    first opening tag and the first closing tag after it (a regex retries from every opening tag: quadratic
    on a completion of repeated unclosed tags)."""
    opening, closing = tag
    start = text.find(opening)
    if start < 0:
        return None
    end = text.find(closing, start + len(opening))
    return text[start + len(opening):end] if end >= 0 else None


def answer_block(text: str) -> str | None:
    """The first `<answer>` block's content, stripped (the reference's `<answer>\\s*(.*?)\\s*</answer>` group);
    None without a closed block."""
    answer = extract_tag(text, _ANSWER)
    return None if answer is None else answer.strip()


def loads_strict(text: str) -> tuple[bool, object]:
    """(True, value) when `text` is JSON to Python's `json.loads` (which the reference uses: NaN and
    Infinity included), else (False, None). Text past `MAX_ANSWER_CHARS` is refused unread."""
    if len(text) > MAX_ANSWER_CHARS:
        return False, None
    try:
        return True, json.loads(text)
    except JSON_ERRORS:
        return False, None


def answer_json(text: str) -> tuple[bool, object]:
    """The first answer block through `loads_strict`; (False, None) without a block."""
    answer = answer_block(text)
    return (False, None) if answer is None else loads_strict(answer)


def _is_real(value) -> bool:
    """A finite JSON number (a bool counts, as numpy reads it: 0 or 1)."""
    if not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past float's range
        return False


def _strict_points(raw) -> list[list[float]] | None:
    """The reference's `[[p[0], p[1]] for p in points]`, numbers only; None when any item fails (the reference
    then drops the whole object: its list comprehension raises, or SAM2 rejects the prompt)."""
    if not isinstance(raw, (list, str, dict)):
        return None  # iterating a number raises
    points = []
    for item in raw:
        if not isinstance(item, (list, str)) or len(item) < 2 or not (_is_real(item[0]) and _is_real(item[1])):
            return None
        points.append([float(item[0]), float(item[1])])
    return points


def strict_objects(answer: str | None) -> tuple[list[ParsedObject], str | None]:
    """SAM2's prompts as the reference reads them from a completion's answer text (`answer_block`), and why
    there are none (or None).

    The answer must be a JSON list; each item that is a dict with `bbox_2d` a list of 4 finite numbers, and
    `points` (optional) a list of points of at least 2 numbers each, is one object (box and `[x, y]` points as
    written, not clipped or sorted). Other items are skipped, as the reference skips them."""
    if answer is None:
        return [], "no <answer> block"
    ok, data = loads_strict(answer)
    if not ok:
        return [], "answer is not JSON"
    if not isinstance(data, list):
        return [], "answer is not a JSON list"
    return _collect_objects(data, _strict_object), None


def _strict_object(item: dict) -> ParsedObject | None:
    box, points = item.get("bbox_2d", []), _strict_points(item.get("points", []))
    if not isinstance(box, list) or len(box) != 4 or not all(_is_real(v) for v in box) or points is None:
        return None
    return ParsedObject(box=[float(v) for v in box], points=points[:MAX_POINTS])


def _collect_objects(items: list, read) -> list[ParsedObject]:
    """`read(item)` of each dict item that gives an object, at most `MAX_OBJECTS` of them."""
    objects = []
    for item in items:
        if len(objects) >= MAX_OBJECTS:
            break
        if isinstance(item, dict) and (obj := read(item)) is not None:
            objects.append(obj)
    return objects


def parse_strict(text: str) -> ParsedCompletion:
    """Think text, answer text and the reference's SAM2 objects of a completion (`strict_objects`)."""
    answer = answer_block(text)
    objects, error = strict_objects(answer)
    return ParsedCompletion(extract_tag(text, _THINK), answer, objects, error=error)


def draft_boxes(answer: str) -> list:
    """The boxes the reference draws on the stage-2 draft, from the stage-1 answer text: `json.loads` of it;
    for a list, the `bbox_2d` of each dict item that has one of length 4 — and none at all when some item's
    `bbox_2d` has no length (the reference's `len()` raises and it drops every box). Values as written:
    `render.draw_boxes` skips what PIL cannot draw."""
    ok, data = loads_strict(answer)
    if not ok or not isinstance(data, list):
        return []
    boxes = []
    for item in data:
        if isinstance(item, dict) and "bbox_2d" in item:
            box = item["bbox_2d"]
            if not isinstance(box, (list, dict, str)):
                return []
            if len(box) == 4:
                boxes.append(box)
    return boxes[:MAX_OBJECTS]


def parse_for_sam(text: str, width: int | None = None, height: int | None = None,
                  lenient: bool = False) -> ParsedCompletion:
    """The objects SAM2 gets from a completion: `parse_strict` (the reference), or `parse_completion` with
    `lenient` (coordinates clipped to width x height)."""
    return parse_completion(text, width, height) if lenient else parse_strict(text)


def _strip_fence(text: str) -> str:
    """Text without a surrounding ``` / ```json code fence (and the whitespace inside it)."""
    if text.startswith("```"):
        text = text[3:]
        if text.startswith("json"):
            text = text[4:]
    if text.endswith("```"):
        text = text[:-3]
    return text.strip()


def _lenient_json(answer: str):
    text = _strip_fence(answer.strip())
    for candidate in (text, _TRAILING_COMMA.sub(r"\1", text.replace("'", '"'))):
        try:
            return json.loads(candidate)
        except JSON_ERRORS:
            continue
    # the list may be embedded in prose: take the outermost [...]
    start, end = text.find("["), text.rfind("]")
    if 0 <= start < end:
        try:
            return json.loads(_TRAILING_COMMA.sub(r"\1", text[start:end + 1].replace("'", '"')))
        except JSON_ERRORS:
            pass
    raise ValueError("answer is not JSON")


def _number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if len(value) > 64:  # no coordinate needs more digits; float() of a long string is not linear
            return None
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)  # an int past 1e308 raises OverflowError
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def _clip(value: float, upper: float | None) -> float:
    value = max(0.0, value)
    return min(value, upper) if upper is not None else value


def _read_box(raw, width, height) -> list[float] | None:
    if not isinstance(raw, (list, tuple)) or len(raw) != 4:
        return None
    numbers = [_number(v) for v in raw]
    if any(v is None for v in numbers):
        return None
    x1, y1, x2, y2 = numbers
    x1, x2 = sorted((x1, x2))
    y1, y2 = sorted((y1, y2))
    xmax = width - 1 if width else None
    ymax = height - 1 if height else None
    return [_clip(x1, xmax), _clip(y1, ymax), _clip(x2, xmax), _clip(y2, ymax)]


def _read_points(raw, width, height) -> list[list[float]]:
    if not isinstance(raw, (list, tuple)):
        return []
    if len(raw) == 2 and all(_number(v) is not None for v in raw):
        raw = [raw]  # a single point written flat
    points = []
    for item in raw[:MAX_POINTS]:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            x, y = _number(item[0]), _number(item[1])
            if x is not None and y is not None:
                points.append([_clip(x, width - 1 if width else None), _clip(y, height - 1 if height else None)])
    return points


def read_objects(data, width: int | None = None, height: int | None = None) -> list[ParsedObject]:
    """Objects from parsed JSON: a list of dicts (or one dict, or {"objects": [...]})."""
    if isinstance(data, dict):
        data = data.get("objects", [data])
    if not isinstance(data, list):
        return []
    def read(item: dict) -> ParsedObject | None:
        box = _read_box(next((item[k] for k in _BOX_KEYS if k in item), None), width, height)
        if box is None:
            return None
        return ParsedObject(box=box, points=_read_points(item.get("points", item.get("point_2d", [])), width, height))

    return _collect_objects(data, read)


def parse_completion(text: str, width: int | None = None, height: int | None = None) -> ParsedCompletion:
    """Think text, answer text and objects of a completion; coordinates clipped to width x height."""
    think = extract_tag(text, _THINK)
    answer = extract_tag(text, _ANSWER)
    if answer is None:
        opened = text.rfind("<answer>")
        if opened < 0:
            return ParsedCompletion(think, None, [], error="no <answer> block")
        answer = text[opened + len(_ANSWER[0]):]  # cut off before </answer>: read what is there
    if len(answer) > MAX_ANSWER_CHARS:
        return ParsedCompletion(think, answer[:200], [], error=f"answer longer than {MAX_ANSWER_CHARS} chars")
    try:
        data = _lenient_json(answer)
    except ValueError as err:
        return ParsedCompletion(think, answer, [], error=str(err))
    return ParsedCompletion(think, answer, read_objects(data, width, height))
