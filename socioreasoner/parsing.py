"""Reading a model completion: think text, answer text, and the objects it names.

`parse_completion` is lenient, for real model output: surrounding whitespace or code fences,
single quotes, trailing commas, numbers written as strings, a single object instead of a list.
It never evaluates code, and it caps what a completion can make us allocate: at most
`MAX_OBJECTS` objects and `MAX_POINTS` points per object, coordinates finite and clipped to
the image, reversed corners put in order. Rewards judge format on the raw text separately
(`strict_answer_json`), so leniency here never earns format reward.
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


def strict_answer_json(text: str):
    """The answer block parsed as strict JSON, or None (no block, or not JSON)."""
    answer = extract_tag(text, _ANSWER)
    if answer is None or len(answer) > MAX_ANSWER_CHARS:
        return None
    try:
        return json.loads(answer)
    except JSON_ERRORS:
        return None


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
    objects = []
    for item in data:
        if len(objects) >= MAX_OBJECTS:
            break
        if not isinstance(item, dict):
            continue
        raw_box = next((item[k] for k in _BOX_KEYS if k in item), None)
        box = _read_box(raw_box, width, height)
        if box is None:
            continue
        raw_points = item.get("points", item.get("point_2d", []))
        objects.append(ParsedObject(box=box, points=_read_points(raw_points, width, height)))
    return objects


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
