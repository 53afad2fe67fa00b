"""Drawing: the stage-1 draft the model sees in stage 2, and the visualisations of predict/eval.

`render_draft` redraws an image (in the Qwen frame) with the stage-1 boxes outlined and the
stage-1 mask shaded — the model "sees its own draft", as an annotator would. The same call
draws on the map and on the satellite image, so both stage-2 images show the draft. It is the
reference's render pixel for pixel (SPEC, *Reference parity*): blue outlines of width 2 drawn
first, then the mask (OpenCV nearest-neighbour resize) alpha-composited over them in red at
alpha int(255 · 0.4), so box pixels under the mask are tinted too.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
from PIL import Image, ImageDraw

logger = logging.getLogger(__name__)

DRAFT_MASK_COLOUR = (255, 0, 0)
DRAFT_MASK_ALPHA = int(255 * 0.4)  # 102, as the reference's RGBA overlay
DRAFT_BOX_COLOUR = (0, 0, 255)
FINAL_MASK_COLOUR = (0, 120, 255)
GT_MASK_COLOUR = (255, 200, 0)
POINT_COLOUR = (255, 0, 255)


def resize_mask(mask, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask resized to `size` = (width, height) with OpenCV's `INTER_NEAREST` (the reference's resize:
    source pixel floor(x · scale), not PIL's centre sampling); unchanged if it already fits."""
    mask = np.asarray(mask, bool)
    if mask.shape == (size[1], size[0]):
        return mask
    return cv2.resize(mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST) > 0


def _mask_for(image: Image.Image, mask) -> np.ndarray:
    return resize_mask(mask, image.size)


def overlay_mask(image: Image.Image, mask, colour=DRAFT_MASK_COLOUR, alpha: float = 0.4) -> Image.Image:
    """`image` with `mask` (resized to it if needed) shaded in `colour`."""
    array = np.asarray(image.convert("RGB")).astype(np.float32)
    region = _mask_for(image, mask)
    array[region] = (1 - alpha) * array[region] + alpha * np.asarray(colour, np.float32)
    return Image.fromarray(array.round().astype(np.uint8))


def draw_boxes(image: Image.Image, boxes, colour=DRAFT_BOX_COLOUR, width: int = 2) -> Image.Image:
    """`image` with each `[x1, y1, x2, y2]` outlined; a box PIL cannot draw (reversed corners, values that are
    not numbers) is skipped, as the reference skips it."""
    image = image.copy()
    draw = ImageDraw.Draw(image)
    skipped = 0
    for box in boxes:
        try:
            draw.rectangle([(box[0], box[1]), (box[2], box[3])], outline=colour, width=width)
        except (ValueError, TypeError, OverflowError, KeyError, IndexError):
            skipped += 1
    if skipped:
        logger.debug("%d of %d boxes could not be drawn (skipped)", skipped, len(boxes))
    return image


def draw_points(image: Image.Image, points, colour=POINT_COLOUR, radius: int = 3) -> Image.Image:
    image = image.copy()
    draw = ImageDraw.Draw(image)
    for x, y in points:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=colour, outline=(0, 0, 0))
    return image


def render_draft(image: Image.Image, boxes, mask, line_width: int = 2) -> Image.Image:
    """The stage-2 input: `image` with the stage-1 boxes outlined, then the stage-1 mask composited over.

    `boxes` are in `image`'s pixel frame (`parsing.draft_boxes` of the stage-1 answer, as the reference);
    `mask` is resized (`resize_mask`) to the image if needed.
    """
    outlined = draw_boxes(image.convert("RGBA"), boxes, DRAFT_BOX_COLOUR, line_width)
    overlay = np.zeros((image.height, image.width, 4), np.uint8)
    overlay[resize_mask(mask, image.size)] = (*DRAFT_MASK_COLOUR, DRAFT_MASK_ALPHA)
    return Image.alpha_composite(outlined, Image.fromarray(overlay, "RGBA")).convert("RGB")


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
