"""Toy city: procedurally generated map/satellite pairs in the raw SocioSeg layout.

    python -m socioreasoner.data.synthetic --out data/toy --num-samples 64 --seed 0 --splits train,val,test

A city is a grid of blocks separated by roads; blocks hold one or two parcels (sometimes a
small one) of a land-use class. The *map* fills parcels with a legend-like colour per class
and writes the names of named places; the *satellite* shows the same layout as noisy
imagery (roofs, trees, water, asphalt) where, as in real cities, a school's roof looks much
like an office block's — the map is needed to tell them apart. Each sample asks for a name
("Elm School"), a class ("school") or a function ("educational"), with 1–4 target
components. Deterministic per (seed, split, index).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm import tqdm

from socioreasoner.data.toy_layout import (
    CLASSES,
    Parcel,
    _assign,
    _grid_layout,
    _layout,
)

logger = logging.getLogger(__name__)

WATER_FILL = (170, 208, 240)
HIGHLIGHT_FILL = (220, 40, 40)  # a search result's fill, as a web map draws the place it found
ROAD_FILL = (255, 255, 255)
BLOCK_FILL = (242, 239, 233)


def _draw_map(parcels: list[Parcel], size: int, highlight: set[int] = frozenset()) -> np.ndarray:
    image = np.full((size, size, 3), ROAD_FILL, np.uint8)
    order = sorted(range(len(parcels)), key=lambda i: not parcels[i].extras.get("background"))
    for i in order:
        parcel = parcels[i]
        x1, y1, x2, y2 = parcel.box
        fill = HIGHLIGHT_FILL if i in highlight else WATER_FILL if parcel.water else CLASSES[parcel.cls][1]
        outline = tuple(int(c * 0.8) for c in fill)
        cv2.rectangle(image, (x1, y1), (x2, y2), fill, -1)
        cv2.rectangle(image, (x1, y1), (x2, y2), outline, 1)
    scale = max(0.22, size / 900)
    for parcel in parcels:
        if not parcel.name:
            continue
        x1, y1, x2, y2 = parcel.box
        for line_no, word in enumerate(parcel.name.split()):
            (tw, th), _ = cv2.getTextSize(word, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
            cx = int(np.clip((x1 + x2 - tw) / 2, 0, size - tw))
            cy = int(np.clip((y1 + y2) / 2 + (line_no - 0.5) * (th + 2) + th / 2, th, size - 1))
            cv2.putText(image, word, (cx, cy), cv2.FONT_HERSHEY_SIMPLEX, scale, (60, 60, 60), 1, cv2.LINE_AA)
    return image


def coordinate_tint(image: np.ndarray, amplitude: float) -> np.ndarray:
    """Shift red by ±amplitude from left to right and blue from top to bottom, so a patch's colour
    says where it is (a randomly initialised vision tower has no absolute position of its own)."""
    pixels = image.astype(np.float64)
    h, w = pixels.shape[:2]
    pixels[..., 0] += amplitude * (2 * np.arange(w)[None, :] / max(w - 1, 1) - 1)
    pixels[..., 2] += amplitude * (2 * np.arange(h)[:, None] / max(h - 1, 1) - 1)
    return np.clip(pixels, 0, 255).round().astype(np.uint8)


def _noise(rng, shape, amount):
    return rng.normal(0, amount, shape)


def _roof(image, rng, box, base):
    x1, y1, x2, y2 = box
    colour = np.clip(np.array(base) + rng.integers(-15, 16, 3), 0, 255)
    cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c) for c in colour), -1)
    cv2.rectangle(image, (x1, y1), (x2, y2), tuple(int(c * 0.7) for c in colour), 1)


def _inner(rng, box, frac_lo=0.4, frac_hi=0.7):
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    bw, bh = max(3, int(w * rng.uniform(frac_lo, frac_hi))), max(3, int(h * rng.uniform(frac_lo, frac_hi)))
    bx = x1 + int(rng.integers(0, max(1, w - bw)))
    by = y1 + int(rng.integers(0, max(1, h - bh)))
    return bx, by, bx + bw, by + bh


def _draw_satellite(rng: np.random.Generator, parcels: list[Parcel], size: int) -> np.ndarray:
    image = np.full((size, size, 3), (96, 96, 98), np.float64)
    image += _noise(rng, image.shape, 6)
    image = image.astype(np.uint8)
    grey_roof = (150, 150, 155)
    for parcel in sorted(parcels, key=lambda p: not p.extras.get("background")):
        x1, y1, x2, y2 = parcel.box
        if parcel.water:
            cv2.rectangle(image, (x1, y1), (x2, y2), (40, 70, 110), -1)
            continue
        cv2.rectangle(image, (x1, y1), (x2, y2), (128, 130, 110), -1)  # bare ground
        cls = parcel.cls
        if cls == "residential":
            step = int(rng.integers(7, 10))
            for yy in range(y1 + 1, y2 - 4, step):
                for xx in range(x1 + 1, x2 - 4, step):
                    base = (150, 70, 60) if rng.random() < 0.6 else (120, 110, 100)
                    _roof(image, rng, (xx, yy, min(x2, xx + step - 3), min(y2, yy + step - 3)), base)
        elif cls in ("park", "stadium"):
            cv2.rectangle(image, (x1, y1), (x2, y2), (70, 110, 60), -1)
            if cls == "stadium":
                cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
                axes = (max(2, (x2 - x1) // 2 - 2), max(2, (y2 - y1) // 2 - 2))
                cv2.ellipse(image, (cx, cy), axes, 0, 0, 360, (170, 170, 170), -1)
                cv2.ellipse(image, (cx, cy), (max(1, axes[0] - 4), max(1, axes[1] - 4)), 0, 0, 360,
                            (80, 150, 70), -1)
            else:
                for _ in range((x2 - x1) * (y2 - y1) // 30):
                    px, py = int(rng.integers(x1, x2 + 1)), int(rng.integers(y1, y2 + 1))
                    cv2.circle(image, (px, py), int(rng.integers(1, 4)), (40, int(rng.integers(80, 120)), 40), -1)
        elif cls == "mall":
            cv2.rectangle(image, (x1, y1), (x2, y2), (85, 85, 88), -1)  # parking
            _roof(image, rng, _inner(rng, parcel.box, 0.5, 0.8), grey_roof)
        else:  # school, university, hospital, clinic, office: grey roofs that look alike
            for _ in range(1 if cls in ("clinic", "office", "hospital") else 2):
                _roof(image, rng, _inner(rng, parcel.box), grey_roof)
            if cls in ("school", "university") and rng.random() < 0.5:
                bx1, by1, bx2, by2 = _inner(rng, parcel.box, 0.3, 0.5)
                cv2.ellipse(image, ((bx1 + bx2) // 2, (by1 + by2) // 2), (max(2, (bx2 - bx1) // 2),
                            max(2, (by2 - by1) // 2)), 0, 0, 360, (160, 80, 70), -1)
    noisy = image.astype(np.float64) + _noise(rng, image.shape, 8)
    noisy = cv2.GaussianBlur(np.clip(noisy, 0, 255).astype(np.uint8), (3, 3), 0)
    return noisy


LAYOUTS = ("city", "grid")


def generate_sample(seed: int, size: int = 224, layout: str = "city", highlight: bool = False,
                    tint: float = 0.0) -> dict:
    """One toy-city sample: map, satellite, mask (uint8 arrays), problem, level, target classes.

    `layout="city"`: a jittered grid of 3-4 blocks a side, split parcels, small corner parcels,
    1-4 targets. `layout="grid"`: nine equal blocks, one parcel each, 1-2 targets whose class
    no other parcel has. `highlight`: the map fills the target parcels in red, as a web map
    shows a search result, so finding *which* parcels is done by the map and the model only
    has to find *where* they are. `tint`: `coordinate_tint` of the map with this amplitude.
    The demo uses the grid with both (see docs/toy_learnability.md for why)."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} (got {layout!r})")
    rng = np.random.default_rng(seed)
    if layout == "grid":
        parcels = _grid_layout(size)
        level, problem, targets = _assign(rng, parcels, k_choices=(1, 1, 2), unique_class=True)
    else:
        parcels = _layout(rng, size)
        level, problem, targets = _assign(rng, parcels)
    mask = np.zeros((size, size), np.uint8)
    for i in targets:
        x1, y1, x2, y2 = parcels[i].box
        mask[y1:y2 + 1, x1:x2 + 1] = 255
    map_image = _draw_map(parcels, size, highlight=set(targets) if highlight else frozenset())
    if tint:
        map_image = coordinate_tint(map_image, tint)
    return {
        "map": map_image,
        "sat": _draw_satellite(rng, parcels, size),
        "mask": mask,
        "problem": problem,
        "level": level,
        "target_classes": sorted({parcels[i].cls for i in targets}),
    }


def _split_seed(seed: int, split: str, index: int) -> int:
    split_code = sum((i + 1) * ord(c) for i, c in enumerate(split))
    return int(np.random.SeedSequence([seed, split_code, index]).generate_state(1)[0])


def write_sample(sample: dict, sample_dir: Path) -> None:
    sample_dir.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sample["map"]).save(sample_dir / "map.png", optimize=True)
    Image.fromarray(sample["sat"]).save(sample_dir / "sat.png", optimize=True)
    Image.fromarray(sample["mask"], mode="L").save(sample_dir / "mask.png", optimize=True)
    question = {"problem": sample["problem"], "level": sample["level"], "target_classes": sample["target_classes"]}
    (sample_dir / "question.json").write_text(json.dumps(question, indent=1))


def generate_toy_city(out: str | Path, num_samples: int, seed: int = 0, splits=("train", "val", "test"),
                      size: int = 224, layout: str = "city", progress: bool = True, highlight: bool = False,
                      tint: float = 0.0) -> Path:
    """Write `num_samples` samples into each split of `out` in the raw SocioSeg layout."""
    if size < 112:
        raise ValueError(f"size must be >= 112 px (got {size})")
    out = Path(out)
    for split in splits:
        for index in tqdm(range(num_samples), desc=f"toy city {split}", disable=not progress):
            sample = generate_sample(_split_seed(seed, split, index), size=size, layout=layout, highlight=highlight,
                                     tint=tint)
            write_sample(sample, out / split / f"{split}_{index:05d}")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Generate a toy city in the raw SocioSeg layout.")
    parser.add_argument("--out", required=True)
    parser.add_argument("--num-samples", type=int, default=32, help="samples per split")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--splits", default="train,val,test", help="comma-separated split names")
    parser.add_argument("--size", type=int, default=224, help="image side in pixels (>= 112)")
    parser.add_argument("--layout", choices=LAYOUTS, default="city",
                        help="city: irregular blocks, 1-4 targets; grid: nine equal blocks, 1-2 targets (the demo)")
    parser.add_argument("--highlight", action="store_true", help="fill the target parcels red on the map")
    parser.add_argument("--tint", type=float, default=0.0, help="coordinate tint of the map, e.g. 40 (the demo's)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    splits = [s for s in args.splits.split(",") if s]
    out = generate_toy_city(args.out, args.num_samples, seed=args.seed, splits=splits, size=args.size,
                            layout=args.layout, highlight=args.highlight, tint=args.tint)
    print(f"wrote {args.num_samples} samples x {len(splits)} split(s) to {out}")


if __name__ == "__main__":
    main()
