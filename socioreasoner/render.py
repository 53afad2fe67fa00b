"""Drawing: the stage-1 draft the model sees in stage 2, and the visualisations of predict/eval.

`render_draft` redraws an image (in the Qwen frame) with the stage-1 boxes outlined and the
stage-1 mask shaded — the model "sees its own draft", as an annotator would. The same call
draws on the map and on the satellite image, so both stage-2 images show the draft.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

DRAFT_MASK_COLOUR = (255, 0, 0)
DRAFT_BOX_COLOUR = (0, 255, 0)
FINAL_MASK_COLOUR = (0, 120, 255)
GT_MASK_COLOUR = (255, 200, 0)
POINT_COLOUR = (255, 0, 255)


def resize_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized (nearest) to `size` = (width, height); unchanged if it already fits."""
    mask = np.asarray(mask, bool)
    if mask.shape == (size[1], size[0]):
        return mask
    return np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 0


def _mask_for(image: Image.Image, mask) -> np.ndarray:
    return resize_mask(mask, image.size)


def overlay_mask(image: Image.Image, mask, colour=DRAFT_MASK_COLOUR, alpha: float = 0.4) -> Image.Image:
    """`image` with `mask` (resized to it if needed) shaded in `colour`."""
    array = np.asarray(image.convert("RGB")).astype(np.float32)
    region = _mask_for(image, mask)
    array[region] = (1 - alpha) * array[region] + alpha * np.asarray(colour, np.float32)
    return Image.fromarray(array.round().astype(np.uint8))


def draw_boxes(image: Image.Image, boxes, colour=DRAFT_BOX_COLOUR, width: int = 2) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for x1, y1, x2, y2 in boxes:
        draw.rectangle([x1, y1, x2, y2], outline=colour, width=width)
    return image


def draw_points(image: Image.Image, points, colour=POINT_COLOUR, radius: int = 3) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for x, y in points:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
    return image


def render_draft(image: Image.Image, boxes, mask, alpha: float = 0.4, line_width: int = 2) -> Image.Image:
    """The stage-2 input: `image` with the stage-1 mask shaded and the stage-1 boxes outlined.

    `boxes` are in `image`'s pixel frame; `mask` is resized (nearest) to the image if needed.
    """
    return draw_boxes(overlay_mask(image, mask, DRAFT_MASK_COLOUR, alpha), boxes, DRAFT_BOX_COLOUR, line_width)


def _label(tile: Image.Image, text: str) -> Image.Image:
    out = Image.new("RGB", (tile.width, tile.height + 16), "white")
    out.paste(tile, (0, 16))
    ImageDraw.Draw(out).text((3, 2), text, fill="black")
    return out


def side_by_side(map_image: Image.Image, sat_image: Image.Image, final_mask, stage1_boxes=(),
                 final_boxes=(), points=(), gt_mask=None, stage1_mask=None) -> Image.Image:
    """map | satellite + stage-1 boxes (and mask) | satellite + final mask, boxes, points | GT.

    All coordinates and masks are in the satellite image's original frame.
    """
    sat = sat_image.convert("RGB")
    draft = sat if stage1_mask is None else overlay_mask(sat, stage1_mask, DRAFT_MASK_COLOUR)
    tiles = [
        _label(map_image.convert("RGB").resize(sat.size), "map"),
        _label(draw_boxes(draft, stage1_boxes), "stage 1: boxes"),
        _label(draw_points(draw_boxes(overlay_mask(sat, final_mask, FINAL_MASK_COLOUR), final_boxes), points),
               "final mask"),
    ]
    if gt_mask is not None:
        tiles.append(_label(overlay_mask(sat, gt_mask, GT_MASK_COLOUR, 0.5), "ground truth"))
    gap = 4
    canvas = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for tile in tiles:
        canvas.paste(tile, (x, 0))
        x += tile.width + gap
    return canvas
