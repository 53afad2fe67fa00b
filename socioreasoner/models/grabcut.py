"""A classical segmenter behind `SamSegmenter`'s interface: OpenCV GrabCut from boxes and points.

For CPU demos and tests where a tiny random SAM2 would make the mask-IoU reward noise: GrabCut
fits colour models inside/outside the box and cuts along image edges, so masks follow the
imagery, and positive points are hard foreground seeds — points change the mask, as they do
with SAM2. It is not a substitute for SAM2 on real imagery. Select it with `sam_model: grabcut`
(training) or `--sam grabcut` (predict / evaluate).
"""

from __future__ import annotations

import hashlib

import cv2
import numpy as np

from socioreasoner.models.segmenter import ImageEmbedding, _normalise_object, _to_rgb_array

GRABCUT = "grabcut"


class GrabCutSegmenter:
    """`encode` keeps each distinct image once; `segment` cuts each object's box (+ points)."""

    model_id = GRABCUT

    def __init__(self, iterations: int = 3, point_radius: int = 2, seed: int = 0):
        self.iterations = iterations
        self.point_radius = point_radius
        self.seed = seed
        self.num_encodes = 0
        self.num_decodes = 0

    def encode(self, images) -> list[ImageEmbedding]:
        arrays = [_to_rgb_array(im) for im in images]
        cache: dict[str, ImageEmbedding] = {}
        out = []
        for array in arrays:
            key = hashlib.sha1(array.tobytes() + str(array.shape).encode()).hexdigest()
            if key not in cache:
                cache[key] = ImageEmbedding([np.ascontiguousarray(array[..., ::-1])], array.shape[0], array.shape[1])
                self.num_encodes += 1
            out.append(cache[key])
        return out

    def _cut(self, bgr: np.ndarray, box, points) -> np.ndarray:
        h, w = bgr.shape[:2]
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        x1, y1 = max(0, min(x1, w - 1)), max(0, min(y1, h - 1))
        x2, y2 = max(x1, min(x2, w - 1)), max(y1, min(y2, h - 1))
        if x2 - x1 < 2 or y2 - y1 < 2:
            mask = np.zeros((h, w), bool)
            mask[y1:y2 + 1, x1:x2 + 1] = True
            return mask
        labels = np.full((h, w), cv2.GC_BGD, np.uint8)
        labels[y1:y2 + 1, x1:x2 + 1] = cv2.GC_PR_FGD
        for x, y in points:
            cv2.circle(labels, (int(round(x)), int(round(y))), self.point_radius, cv2.GC_FGD, -1)
        cv2.setRNGSeed(self.seed)
        bg, fg = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(bgr, labels, None, bg, fg, self.iterations, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            pass  # a degenerate colour model (e.g. a flat box): keep the box as the mask
        mask = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
        return mask

    def segment(self, embedding: ImageEmbedding, prompts: list) -> list[np.ndarray]:
        bgr = embedding.features[0]
        masks = []
        for objects in prompts:
            mask = np.zeros((embedding.height, embedding.width), bool)
            for obj in objects:
                box, points = _normalise_object(obj)
                mask |= self._cut(bgr, box, points)
                self.num_decodes += 1
            masks.append(mask)
        return masks


def make_segmenter(spec: str, device=None):
    """`grabcut` → `GrabCutSegmenter`; anything else is a SAM2 checkpoint for `SamSegmenter`."""
    if spec == GRABCUT:
        return GrabCutSegmenter()
    from socioreasoner.models.segmenter import SamSegmenter

    return SamSegmenter(spec, device=device)


__all__ = ["GRABCUT", "GrabCutSegmenter", "make_segmenter"]
