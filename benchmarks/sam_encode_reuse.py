"""SAM2 encode reuse: the reference's per-completion re-encoding vs encode once + batched decode.

    python benchmarks/sam_encode_reuse.py                 # tiny SAM2, CPU
    python benchmarks/sam_encode_reuse.py --device cuda   # SAM2 hiera-large architecture (random weights)
    python benchmarks/sam_encode_reuse.py --device cuda --compare-fp32   # + bf16 autocast vs fp32

One image, G completions x N objects (boxes + 2 points each). (a) as the reference code: for
every completion, encode the image again and decode its objects one `predict` at a time;
(b) `SamSegmenter.encode` once, then one batched `segment` over all completions. Prints the
encoder calls, decoder calls and wall time of each, and the ratios, measured in the same run.
`--compare-fp32` (CUDA) also runs (b) without bf16 autocast and prints the time ratio and the
mask IoU between the bf16 and fp32 masks.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from socioreasoner.method.metrics import mask_iou
from socioreasoner.models.segmenter import SamSegmenter
from socioreasoner.models.tiny import build_tiny_sam2


def make_prompts(rng, size, completions, objects):
    prompts = []
    for _ in range(completions):
        objs = []
        for _ in range(objects):
            x1, y1 = rng.integers(0, size // 2, 2)
            w, h = rng.integers(size // 8, size // 2, 2)
            box = [float(x1), float(y1), float(x1 + w), float(y1 + h)]
            points = [[float(rng.uniform(box[0] + 1, box[2] - 1)), float(rng.uniform(box[1] + 1, box[3] - 1))]
                      for _ in range(2)]
            objs.append({"box": box, "points": points})
        prompts.append(objs)
    return prompts


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def reference_style(seg: SamSegmenter, image, prompts):
    masks = []
    for objects in prompts:
        emb = seg.encode([image])[0]              # re-encoded for every completion
        mask = np.zeros(image.shape[:2], bool)
        for obj in objects:                       # one decoder call per object
            mask |= seg.segment(emb, [[obj]])[0]
        masks.append(mask)
    return masks


def reuse_style(seg: SamSegmenter, image, prompts):
    emb = seg.encode([image])[0]
    return seg.segment(emb, prompts)


def measure(fn, seg, image, prompts, repeats):
    fn(seg, image, prompts)  # warm-up
    seg.num_encodes = seg.num_decodes = 0
    sync(seg.device)
    start = time.perf_counter()
    for _ in range(repeats):
        masks = fn(seg, image, prompts)
    sync(seg.device)
    return (time.perf_counter() - start) / repeats, seg.num_encodes / repeats, seg.num_decodes / repeats, masks


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--completions", type=int, default=8)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--size", type=int, default=768, help="image side (SocioSeg: 768)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compare-fp32", action="store_true", help="CUDA: also time (b) in fp32, compare masks")
    args = parser.parse_args()
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        real = device.type == "cuda"
        build_tiny_sam2(tmp, real_size=real)
        seg = SamSegmenter(tmp, device=device)
        name = "SAM2 hiera-large architecture (random weights)" if real else "tiny SAM2 (random weights)"
        rng = np.random.default_rng(0)
        image = rng.integers(0, 255, (args.size, args.size, 3), dtype=np.uint8)
        prompts = make_prompts(rng, args.size, args.completions, args.objects)
        t_ref, enc_ref, dec_ref, masks_ref = measure(reference_style, seg, image, prompts, args.repeats)
        t_new, enc_new, dec_new, masks_new = measure(reuse_style, seg, image, prompts, args.repeats)
        if args.compare_fp32 and device.type == "cuda":
            fp32 = SamSegmenter(tmp, device=device, bf16=False)
            t_fp32, _, _, masks_fp32 = measure(reuse_style, fp32, image, prompts, args.repeats)
    same = all(np.array_equal(a, b) for a, b in zip(masks_ref, masks_new))
    print(f"model: {name}, device: {device}, image {args.size}px, G={args.completions} x {args.objects} objects")
    print(f"(a) re-encode per completion: {t_ref * 1000:9.1f} ms  encoder calls {enc_ref:4.0f}  decoder calls {dec_ref:4.0f}")
    print(f"(b) encode once + batched   : {t_new * 1000:9.1f} ms  encoder calls {enc_new:4.0f}  decoder calls {dec_new:4.0f}")
    print(f"encode-count ratio (a/b): {enc_ref / enc_new:.1f}x   time ratio (a/b): {t_ref / t_new:.2f}x   "
          f"identical masks: {same}")
    if args.compare_fp32 and device.type == "cuda":
        ious = [mask_iou(a, b) for a, b in zip(masks_new, masks_fp32)]
        print(f"(b) in fp32                 : {t_fp32 * 1000:9.1f} ms   fp32/bf16 time ratio: {t_fp32 / t_new:.2f}x   "
              f"bf16 vs fp32 mask IoU: mean {np.mean(ious):.4f}, min {np.min(ious):.4f}   "
              f"foreground (fp32): {np.mean([m.mean() for m in masks_fp32]):.3f}")


if __name__ == "__main__":
    main()
