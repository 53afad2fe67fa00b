"""Ground-truth targets derived from a binary mask: one box per component, and the count."""

from __future__ import annotations

import cv2
import numpy as np

from socioreasoner.images import mask_array

MIN_COMPONENT_AREA = 10.0  # the reference drops contours with area <= 10 px


def mask_to_boxes(mask: np.ndarray, min_area: float = MIN_COMPONENT_AREA) -> list[list[int]]:
    """Boxes `[x1, y1, x2, y2]` (inclusive pixel corners) of the mask's external contours.

    Contours nested inside another (holes, islands in holes) belong to the outer component;
    components whose contour area is <= `min_area` are specks and are dropped. Sorted
    top-to-bottom, then left-to-right, so the order is stable.
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
    binary = (mask > 0).astype(np.uint8)
    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    boxes = []
    for contour in contours:
        if cv2.contourArea(contour) <= min_area:
            continue
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append([int(x), int(y), int(x + w - 1), int(y + h - 1)])
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def boxes_to_mask(shape: tuple[int, int], boxes) -> np.ndarray:
    """The (H, W) boolean mask covered by `boxes` (inclusive pixel corners, as `mask_to_boxes` gives)."""
    covered = np.zeros(shape, bool)
    for x1, y1, x2, y2 in boxes:
        covered[y1:y2 + 1, x1:x2 + 1] = True
    return covered


def mask_to_array(image) -> np.ndarray:
    """A mask image (PIL, any mode) as a boolean array: nonzero is foreground (`images.mask_array`)."""
    return mask_array(image)
