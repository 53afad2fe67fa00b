"""A frozen SAM2 that encodes each distinct image once and decodes many prompts in batches.

Why transformers' native SAM2 (`Sam2Model`) rather than Meta's `sam2` package: it loads the
transformers-format checkpoints (`facebook/sam2-hiera-large`, `facebook/sam2.1-hiera-large`)
and our tiny test model through one `from_pretrained`, needs no CUDA extension or Hydra
configs, and exposes the split we need — `get_image_embeddings` once per image, then the
prompt encoder + mask decoder on cached embeddings for any number of prompts.

We do not use `Sam2Processor`: its image processor requires torchvision, which the CPU install
avoids. Pre/post-processing is SAM2's own and small: resize to the square input size read
from the checkpoint's `preprocessor_config.json`, rescale, normalise; masks are upsampled from
the decoder's low-res logits to the input size and then to the original image size, and
thresholded at 0. Prompts are given in original-image pixels.

The reference code re-encodes the same satellite image for every completion and both stages,
and decodes objects one at a time. Here `encode` runs the image encoder once per distinct
image (deduplicated by content) and `segment` decodes all objects of all completions of that
image together, grouped by point count so that no padding changes any result: decoding
completions one by one or batched gives the same masks.
"""

from __future__ import annotations

import hashlib
import json
import logging
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2Model

logger = logging.getLogger(__name__)

DEFAULT_SAM2 = "facebook/sam2-hiera-large"


@dataclass
class ImageEmbedding:
    """SAM2 features of one image (batch of 1) and its original size."""

    features: list[torch.Tensor]
    height: int
    width: int


def _load_preprocessor_config(model_id: str, **hub_kwargs) -> dict:
    path = Path(model_id) / "preprocessor_config.json"
    if not Path(model_id).is_dir():
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(model_id, "preprocessor_config.json", **hub_kwargs))
    if not path.is_file():
        raise FileNotFoundError(f"{model_id}: no preprocessor_config.json (SAM2 input size, mean, std)")
    return json.loads(path.read_text())


@contextmanager
def _whole_weights():
    """Load SAM2 unpartitioned even inside a DeepSpeed ZeRO-3 run.

    Under `accelerate launch` with ZeRO-3 and `zero3_init_flag`, transformers partitions the
    weights of every model loaded with `from_pretrained` (`deepspeed.zero.Init`). SAM2 is frozen
    and runs outside DeepSpeed's engine, so partitioned it would hold empty placeholders (seen on
    an H100: "weight should have at least three dimensions" in its first conv). The switch is
    transformers' global ZeRO-3 config reference; it is cleared for the load and restored after.
    """
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = getattr(hf_deepspeed, "_hf_deepspeed_config_weak_ref", None)
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def _to_rgb_array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"expected an RGB image (H, W, 3), got shape {array.shape}")
    return array.astype(np.uint8, copy=False)


def _normalise_object(obj) -> tuple[list[float], list[list[float]]]:
    """(box, points) from a dict {box|bbox_2d, points} or an object with .box/.points."""
    if isinstance(obj, dict):
        box = obj.get("box", obj.get("bbox_2d"))
        points = obj.get("points") or []
    else:
        box, points = obj.box, obj.points or []
    if box is None or len(box) != 4:
        raise ValueError(f"each object needs a 4-number box, got {obj!r}")
    return [float(v) for v in box], [[float(x), float(y)] for x, y in points]


class SamSegmenter:
    """Frozen SAM2: `encode` distinct images once, `segment` many prompts per image."""

    def __init__(self, model_id: str = DEFAULT_SAM2, device: str | torch.device | None = None,
                 max_batch_objects: int = 64, bf16: bool = True, **hub_kwargs):
        self.model_id = model_id
        self.bf16 = bf16  # on CUDA, run SAM2 under bf16 autocast (as Meta's predictor does); CPU stays fp32
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        with _whole_weights():
            self.model = Sam2Model.from_pretrained(model_id, **hub_kwargs).to(self.device).eval()
        self.model.requires_grad_(False)
        config = _load_preprocessor_config(model_id, **hub_kwargs)
        self.input_size = (int(config["size"]["height"]), int(config["size"]["width"]))
        self.mean = torch.tensor(config.get("image_mean", [0.485, 0.456, 0.406])).view(3, 1, 1)
        self.std = torch.tensor(config.get("image_std", [0.229, 0.224, 0.225])).view(3, 1, 1)
        self.rescale = float(config.get("rescale_factor", 1 / 255))
        self.max_batch_objects = max_batch_objects
        self.num_encodes = 0  # images run through the image encoder (read by tests and benchmarks)
        self.num_decodes = 0  # mask-decoder calls

    def _autocast(self):
        if self.device.type == "cuda" and self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def preprocess(self, image) -> torch.Tensor:
        array = _to_rgb_array(image)
        resized = Image.fromarray(array).resize(self.input_size[::-1], Image.BILINEAR)
        pixels = torch.from_numpy(np.asarray(resized, np.float32)).permute(2, 0, 1) * self.rescale
        return (pixels - self.mean) / self.std

    @torch.inference_mode()
    def encode(self, images, batch_size: int = 8) -> list[ImageEmbedding]:
        """Embeddings for `images` (PIL or HxWx3 arrays), one per input; each distinct image is encoded once."""
        arrays = [_to_rgb_array(im) for im in images]
        keys = [hashlib.sha1(a.tobytes() + str(a.shape).encode()).hexdigest() for a in arrays]
        unique: dict[str, int] = {}
        for index, key in enumerate(keys):
            unique.setdefault(key, index)
        order = list(unique.values())
        encoded: dict[str, ImageEmbedding] = {}
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            pixels = torch.stack([self.preprocess(arrays[i]) for i in chunk]).to(self.device)
            with self._autocast():
                features = self.model.get_image_embeddings(pixels)
            self.num_encodes += len(chunk)
            for j, i in enumerate(chunk):
                encoded[keys[i]] = ImageEmbedding([f[j:j + 1].float() for f in features],
                                                  height=arrays[i].shape[0], width=arrays[i].shape[1])
        return [encoded[key] for key in keys]

    def _to_input_frame(self, coords: torch.Tensor, embedding: ImageEmbedding) -> torch.Tensor:
        scale = torch.tensor([self.input_size[1] / embedding.width, self.input_size[0] / embedding.height])
        return coords * scale.repeat(coords.shape[-1] // 2)

    @torch.inference_mode()
    def decode_logits(self, embedding: ImageEmbedding, boxes: list, points: list) -> torch.Tensor:
        """Best-of-multimask mask logits (N, H, W) at the original size, for N objects that all have
        len(points[i]) points; a mask is logits > 0."""
        box_tensor = self._to_input_frame(torch.tensor(boxes, dtype=torch.float32), embedding)[None]
        kwargs = {"input_boxes": box_tensor.to(self.device)}
        if points and len(points[0]):
            pts = self._to_input_frame(torch.tensor(points, dtype=torch.float32), embedding)[None]
            kwargs["input_points"] = pts.to(self.device)
            kwargs["input_labels"] = torch.ones(pts.shape[:-1], dtype=torch.int32, device=self.device)
        with self._autocast():
            out = self.model(image_embeddings=[f.to(self.device) for f in embedding.features],
                             multimask_output=True, **kwargs)
        self.num_decodes += 1
        logits, scores = out.pred_masks[0].float(), out.iou_scores[0].float()  # (N, 3, h, w), (N, 3)
        best = logits[torch.arange(len(boxes)), scores.argmax(-1)]  # (N, h, w)
        upsampled = F.interpolate(best[:, None], size=self.input_size, mode="bilinear", align_corners=False)
        full = F.interpolate(upsampled, size=(embedding.height, embedding.width), mode="bilinear",
                             align_corners=False)
        return full[:, 0].cpu()

    @torch.inference_mode()
    def segment(self, embedding: ImageEmbedding, prompts: list) -> list[np.ndarray]:
        """One mask per completion: the union of its objects' masks, at the original image size.

        `prompts[i]` is the list of objects of completion i, each a dict `{"box": [x1, y1, x2, y2],
        "points": [[x, y], ...]}` (or a `ParsedObject`) in original-image pixels. An empty list
        gives an empty mask.
        """
        flat = [(ci, *_normalise_object(obj)) for ci, objects in enumerate(prompts) for obj in objects]
        masks = [torch.zeros((embedding.height, embedding.width), dtype=torch.bool) for _ in prompts]
        by_count: dict[int, list] = {}
        for item in flat:
            by_count.setdefault(len(item[2]), []).append(item)
        for group in by_count.values():
            for start in range(0, len(group), self.max_batch_objects):
                chunk = group[start:start + self.max_batch_objects]
                decoded = self.decode_logits(embedding, [c[1] for c in chunk], [c[2] for c in chunk]) > 0
                for (ci, _, _), mask in zip(chunk, decoded):
                    masks[ci] |= mask
        return [m.numpy() for m in masks]
