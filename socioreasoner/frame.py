"""The Qwen coordinate frame: images resized once with Qwen's `smart_resize`.

Every coordinate the model sees or emits lives in the resized frame (multiples of
patch × merge = 28). SAM2 and the metrics work in the original image frame. `QwenFrame`
holds both sizes and maps boxes and points between them.

Defaults are the reference code's *effective* bounds (min 56², max 768²), under which
SocioSeg's 768×768 images become 756×756, the frame the released checkpoint answers in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

QWEN_FACTOR = 28  # patch 14 × spatial merge 2
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_PIXELS = 768 * 768


@dataclass(frozen=True)
class QwenFrame:
    """Original (width, height) and resized (width, height) of one image."""

    orig_w: int
    orig_h: int
    w: int
    h: int

    @classmethod
    def for_size(cls, width: int, height: int, min_pixels: int = DEFAULT_MIN_PIXELS,
                 max_pixels: int = DEFAULT_MAX_PIXELS, factor: int = QWEN_FACTOR) -> QwenFrame:
        h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        return cls(orig_w=width, orig_h=height, w=w, h=h)

    @property
    def scale_x(self) -> float:
        return self.orig_w / self.w

    @property
    def scale_y(self) -> float:
        return self.orig_h / self.h

    def resize(self, image: Image.Image) -> Image.Image:
        """The image in the Qwen frame (bicubic, as Qwen's processor resamples)."""
        if image.size != (self.orig_w, self.orig_h):
            raise ValueError(f"image is {image.size[0]}x{image.size[1]}, frame expects {self.orig_w}x{self.orig_h}")
        if image.size == (self.w, self.h):
            return image
        return image.resize((self.w, self.h), Image.BICUBIC)

    def box_to_original(self, box) -> list[float]:
        x1, y1, x2, y2 = box
        return self._clip_box([x1 * self.scale_x, y1 * self.scale_y, x2 * self.scale_x, y2 * self.scale_y],
                              self.orig_w, self.orig_h)

    def box_to_resized(self, box) -> list[float]:
        x1, y1, x2, y2 = box
        return self._clip_box([x1 / self.scale_x, y1 / self.scale_y, x2 / self.scale_x, y2 / self.scale_y],
                              self.w, self.h)

    def point_to_original(self, point) -> list[float]:
        x, y = point
        return [float(np.clip(x * self.scale_x, 0, self.orig_w - 1)), float(np.clip(y * self.scale_y, 0, self.orig_h - 1))]

    def point_to_resized(self, point) -> list[float]:
        x, y = point
        return [float(np.clip(x / self.scale_x, 0, self.w - 1)), float(np.clip(y / self.scale_y, 0, self.h - 1))]

    @staticmethod
    def _clip_box(box, width: int, height: int) -> list[float]:
        x1, y1, x2, y2 = (float(v) for v in box)
        x1, x2 = sorted((x1, x2))
        y1, y2 = sorted((y1, y2))
        return [float(np.clip(x1, 0, width - 1)), float(np.clip(y1, 0, height - 1)),
                float(np.clip(x2, 0, width - 1)), float(np.clip(y2, 0, height - 1))]
