"""How good can a policy's prompts make the segmenter? Mask IoU from ground-truth prompts.

    python experiments/segmenter_oracle.py --city runs/demo/toy_city --split val          # the demo's GrabCut
    python experiments/segmenter_oracle.py --city data/my_city --sam facebook/sam2-hiera-large --device cuda

For each sample, the GT mask's component boxes (Qwen frame, as the SFT targets) are given to
the segmenter alone (what stage 1 gets), with one point near the box centre, with the SFT
targets' two diagonal points, and with two random points on the target; prints the mean IoU of
each against the GT mask, and the box-filled mask's own IoU (1.0 when targets are rectangles).
The gaps say how much a stage 2 that keeps perfect boxes can add, and how much GRPO could gain
over the SFT's point placement.
"""

from __future__ import annotations

import argparse

import numpy as np
from tqdm import tqdm

from socioreasoner.data import load_socioseg
from socioreasoner.data.targets import boxes_to_mask, mask_to_array
from socioreasoner.demo import DemoSettings
from socioreasoner.method.metrics import mask_iou
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.render import resize_mask
from socioreasoner.models.grabcut import make_segmenter
from socioreasoner.training.sft import component_points, diagonal_points, qwen_frame_targets

PROMPTS = {
    "box alone": lambda mask, box, rng: [],
    "box + 1 centre point": lambda mask, box, rng: diagonal_points(mask, box, n=1),
    "box + 2 diagonal points (SFT target)": lambda mask, box, rng: diagonal_points(mask, box),
    "box + 2 random points on the target": lambda mask, box, rng: component_points(mask, box, rng),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--city", required=True, help="a SocioSeg-format dataset folder")
    parser.add_argument("--split", default="val")
    parser.add_argument("--sam", default="grabcut", help="'grabcut' or a SAM2 id/path")
    parser.add_argument("--device", default=None)
    parser.add_argument("--max-pixels", type=int, default=DemoSettings().max_pixels)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    settings = PromptSettings(max_pixels=args.max_pixels)
    dataset = load_socioseg(args.city, args.split)
    if args.max_samples:
        dataset = dataset.select(range(min(args.max_samples, len(dataset))))
    segmenter, rng = make_segmenter(args.sam, device=args.device), np.random.default_rng(args.seed)
    ious = {name: [] for name in [*PROMPTS, "box-filled mask (no segmenter)"]}
    for record in tqdm(dataset, desc="samples"):
        sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
        gt_original = mask_to_array(record["mask_label"])
        mask_q, boxes = qwen_frame_targets(sample, gt_original)
        embedding = segmenter.encode([sample.sat_image])[0]
        frame = sample.frame
        for name, points_of in PROMPTS.items():
            objects = [{"box": frame.box_to_original(box),
                        "points": [frame.point_to_original(p) for p in points_of(mask_q, box, rng)]} for box in boxes]
            ious[name].append(mask_iou(segmenter.segment(embedding, [objects])[0], gt_original))
        filled = boxes_to_mask(mask_q.shape, boxes)
        ious["box-filled mask (no segmenter)"].append(mask_iou(resize_mask(filled, gt_original.shape[::-1]), gt_original))
    print(f"{len(dataset)} samples of {args.city}/{args.split}, segmenter {args.sam}: mean mask IoU from GT prompts")
    for name, values in ious.items():
        print(f"  {name:40s} {np.mean(values):.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
