"""Does a tiny policy learn to read the toy map? SFT on one target variant, then probe it.

    python experiments/toy_reading_probe.py --out runs/probe/i9 --prompt stage1 --target reasoning --steps 1500
    python experiments/toy_reading_probe.py --out runs/probe/i2 --prompt const --target list --steps 300
    python experiments/toy_reading_probe.py --out runs/probe/h100 --target classes --highlight \
        --position-code 40 --rope-theta 100 --steps 400

The runs of docs/toy_learnability.md (sessions 3 and 4) in one script. Builds the grid toy
city (512 train / 32 val, 168 px) and the tiny policy (width 64, 2 layers, rope θ 2 unless
`--rope-theta`, vision tower frozen), SFTs it on one target, then prints, on the held-out samples: the *listing accuracy*
(the share of the nine block classes a greedy generation names correctly), the stage-1
box-mask IoU (for targets that end in boxes) and the image-reliance gap
(`socioreasoner.diagnostics`).

Prompts: `const` (one fixed instruction), `stage1` (a 40-token stage-1 template with the
query), `qfirst` (the query before the images, fixed text after them), `default` (the
product's ~200-token `STAGE1_TEMPLATE`). Targets: `list` (the
nine classes), `stage1` (the demo's SFT target, `sft.stage1_target`), `reasoning`
(`<think>` listing, `query: block k.` `</think><answer>` boxes `</answer>`), `classes`
(`<think>query = target classes.</think><answer>` boxes `</answer>`). Maps: `--position-code`
(the toy city's coordinate tint), `--highlight` (the target blocks filled red, as the demo's
toy city does). Both are painted here on the unmarked city's map rather than asked of the
generator (`generate_toy_city(highlight=, tint=)`), because the `list`, `classes` and
`reasoning` targets read each block's class from the map's colours, which a red fill hides.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import datasets
import numpy as np
import torch
from PIL import Image

import socioreasoner.data.synthetic as synthetic
import socioreasoner.data.toy_layout as toy_layout
from socioreasoner.data import load_socioseg
from socioreasoner.data.synthetic import generate_toy_city
from socioreasoner.data.targets import mask_to_array
from socioreasoner.diagnostics import image_reliance
from socioreasoner.method.parsing import parse_completion
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.prompts import _user_turn
from socioreasoner.models.tiny import build_tiny_qwen
from socioreasoner.training.sft import qwen_frame_targets, run_sft, stage1_target

SIZE = 168
ANSWER_FORMAT = 'Answer as <think>...</think><answer>[{"bbox_2d": [x1, y1, x2, y2]}]</answer>'
STAGE1_SHORT = 'Map and satellite image, {width}x{height} px. Find every region of "{query}". ' + ANSWER_FORMAT
BLOCKS = [p.box for p in toy_layout._grid_layout(SIZE)]
COLOUR_TO_CLASS = {spec[1]: name for name, spec in toy_layout.CLASSES.items()} | {synthetic.WATER_FILL: "water"}


def block_classes(map_image) -> list[str]:
    pixels = np.asarray(map_image.convert("RGB"))
    return [COLOUR_TO_CLASS[tuple(int(v) for v in pixels[y1 + 3, x1 + 3])] for x1, y1, _, _ in BLOCKS]


def with_position_code(image: Image.Image, amplitude: float) -> Image.Image:
    """The toy city's coordinate tint (red brightens left to right, blue top to bottom, ±amplitude)."""
    return Image.fromarray(synthetic.coordinate_tint(np.asarray(image.convert("RGB")), amplitude))


def prompt_for(kind: str, sample: Sample, settings: PromptSettings) -> list[dict]:
    if kind == "const":
        return _user_turn("List the land use of the nine blocks of the map, row by row.")
    if kind == "qfirst":
        return [{"role": "user", "content": [
            {"type": "text", "text": f'Find every region of "{sample.query}".'}, {"type": "image"}, {"type": "image"},
            {"type": "text", "text": f"Map and satellite image, {SIZE}x{SIZE} px. {ANSWER_FORMAT}"}]}]
    if kind == "default":
        return sample.stage1_messages(PromptSettings(max_pixels=settings.max_pixels))
    return sample.stage1_messages(settings)


def target_for(kind: str, args, query: str, classes: list[str], hits: list[int], boxes) -> str:
    names = [f"{i} {name}" for i, name in enumerate(classes, 1)] if args.numbered else classes
    listing = (", " if args.separator == "comma" else " ").join(names)
    if kind == "list":
        return listing
    if kind == "stage1":
        return stage1_target(query, boxes)
    if kind == "classes":
        answer = json.dumps([{"bbox_2d": b} for b in boxes])
        return f"<think>{query} = {' '.join(sorted({classes[i - 1] for i in hits}))}.</think><answer>{answer}</answer>"
    named = f" = {' '.join(sorted({classes[i - 1] for i in hits}))}" if args.name_classes else ""
    answer = json.dumps([{"bbox_2d": b} for b in boxes])
    return f"<think>{listing}. {query}{named}: block {', '.join(map(str, hits))}.</think><answer>{answer}</answer>"


def examples(city: Path, split: str, args, settings: PromptSettings) -> datasets.Dataset:
    rows = {"prompt": [], "completion": [], "images": [], "classes": [], "gt": []}
    for record in load_socioseg(str(city), split):
        sample = Sample.from_images(record["problem"], record["map_image"], record["sat_image"], settings)
        gt, boxes = qwen_frame_targets(sample, mask_to_array(record["mask_label"]))
        classes = block_classes(record["map_image"])
        hits = [i + 1 for i, (x1, y1, x2, y2) in enumerate(BLOCKS) if gt[(y1 + y2) // 2, (x1 + x2) // 2]]
        text = target_for(args.target, args, sample.query, classes, hits, boxes)
        map_image = sample.map_qwen
        if args.highlight:
            pixels = np.asarray(map_image).copy()
            for k in hits:
                x1, y1, x2, y2 = BLOCKS[k - 1]
                pixels[y1:y2 + 1, x1:x2 + 1] = synthetic.HIGHLIGHT_FILL
            map_image = Image.fromarray(pixels)
        map_image = with_position_code(map_image, args.position_code) if args.position_code else map_image
        rows["prompt"].append(prompt_for(args.prompt, sample, settings))
        rows["completion"].append([{"role": "assistant", "content": text}])
        rows["images"].append([map_image, sample.sat_qwen])
        rows["classes"].append(classes)
        rows["gt"].append(gt.astype(np.uint8).tolist())
    return datasets.Dataset.from_dict(rows)


def probe(model, processor, val: datasets.Dataset, boxes_in_target: bool) -> dict:
    accuracy, ious = [], []
    for row in val:
        text = processor.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        inputs = processor(text=[text], images=row["images"], return_tensors="pt")
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=64, do_sample=False)
        generated = processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]
        named = [w for w in generated.removeprefix("<think>").split(".")[0].replace(",", " ").split() if not w.isdigit()]
        accuracy.append(float(np.mean([a == b for a, b in zip(named, row["classes"])])) if len(named) >= 9 else 0.0)
        if boxes_in_target:
            gt = np.array(row["gt"], bool)
            predicted = np.zeros_like(gt)
            for obj in parse_completion(generated, SIZE, SIZE).objects:
                x1, y1, x2, y2 = (int(round(v)) for v in obj.box)
                predicted[max(y1, 0):y2, max(x1, 0):x2] = True
            ious.append((gt & predicted).sum() / max((gt | predicted).sum(), 1))
    result = {"listing_accuracy": float(np.mean(accuracy))}
    if ious:
        result["box_mask_iou"] = float(np.mean(ious))
    return result


def main():
    global SIZE, BLOCKS
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--prompt", choices=["const", "stage1", "qfirst", "default"], default="stage1")
    parser.add_argument("--target", choices=["list", "stage1", "reasoning", "classes"], default="reasoning")
    parser.add_argument("--separator", choices=["space", "comma"], default="space")
    parser.add_argument("--name-classes", action="store_true", help="reasoning: 'query = classes: block k'")
    parser.add_argument("--numbered", action="store_true", help="number the listing: '1 office 2 park ...'")
    parser.add_argument("--position-code", type=float, default=0.0, help="amplitude of the maps' position code")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--init", default=None, help="start from this policy instead of a fresh tiny one")
    parser.add_argument("--train-samples", type=int, default=512)
    parser.add_argument("--val-samples", type=int, default=32)
    parser.add_argument("--highlight", action="store_true", help="paint the target blocks red on the map")
    parser.add_argument("--rope-theta", type=float, default=2.0, help="the tiny policy's rope theta")
    parser.add_argument("--size", type=int, default=SIZE, help="image side (168: 2 x 2 image tokens a block; 84: one)")
    args = parser.parse_args()
    SIZE, BLOCKS = args.size, [p.box for p in synthetic._grid_layout(args.size)]
    out = Path(args.out)
    city = out / "city"
    generate_toy_city(city, args.train_samples, seed=0, splits=("train",), size=SIZE, layout="grid", progress=False)
    generate_toy_city(city, args.val_samples, seed=0, splits=("val",), size=SIZE, layout="grid", progress=False)
    settings = PromptSettings(max_pixels=SIZE * SIZE, stage1_template=STAGE1_SHORT)
    train, val = examples(city, "train", args, settings), examples(city, "val", args, settings)
    start_model = args.init or build_tiny_qwen(out / "tiny", seed=0, rope_theta=args.rope_theta)
    start = time.time()
    policy = run_sft(str(start_model), train.remove_columns(["classes", "gt"]), str(out / "sft"),
                     max_steps=args.steps, learning_rate=args.lr, freeze_vision=True)
    sft_seconds = time.time() - start

    from transformers import Qwen2_5_VLForConditionalGeneration

    from socioreasoner.models.qwen_processor import load_qwen_processor

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(policy)).eval()
    processor = load_qwen_processor(str(policy))
    result = {"sft_seconds": round(sft_seconds), **probe(model, processor, val, args.target != "list"),
              "image_reliance": image_reliance(model, processor, val.remove_columns(["classes", "gt"]),
                                               progress=False)}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
