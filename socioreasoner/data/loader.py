"""Loading SocioSeg-format data from the hub, a local HF dataset, or the raw folder layout.

Whatever the source, `load_socioseg` returns a `datasets.Dataset` with the columns

    id (str), problem (str), map_image, sat_image, mask_label (Image), level (str | None),
    gt_boxes (list of [x1, y1, x2, y2], original frame), num_objects (int)

Raw layout: `<root>/<split>/<id>/{map.png, sat.png, mask.png, question.json}`, with
`question.json` holding at least `{"problem": "..."}` and optionally `"level"`.
A task level is taken from the data (a `level` column/field) or from a mapping file
(`levels=` a JSON file `{id: level}`), never guessed; otherwise it is null.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import datasets
from PIL import Image

from socioreasoner.data.targets import mask_to_array, mask_to_boxes
from socioreasoner.images import MAX_IMAGE_PIXELS, check_mask_format, open_image
from socioreasoner.method.prompts import check_query

logger = logging.getLogger(__name__)

SOCIOSEG_HUB_ID = "vvangfaye/SocioSeg"
LEVELS = ("name", "class", "function")
_LEVEL_ALIASES = {
    "name": "name", "socio-name": "name", "socio_name": "name", "socioname": "name",
    "class": "class", "socio-class": "class", "socio_class": "class", "socioclass": "class",
    "function": "function", "socio-function": "function", "socio_function": "function",
    "sociofunction": "function",
}
RAW_FILES = ("map.png", "sat.png", "mask.png", "question.json")
MAX_QUESTION_BYTES = 1_000_000

FEATURES = datasets.Features({
    "id": datasets.Value("string"),
    "problem": datasets.Value("string"),
    "map_image": datasets.Image(),
    "sat_image": datasets.Image(),
    "mask_label": datasets.Image(),
    "level": datasets.Value("string"),
    "gt_boxes": datasets.Sequence(datasets.Sequence(datasets.Value("int32"), length=4)),
    "num_objects": datasets.Value("int32"),
})


class SocioSegDataError(ValueError):
    """A sample that does not follow the SocioSeg format; the message names the sample and path."""


def normalize_level(value, where: str) -> str | None:
    if value is None or value == "":
        return None
    level = _LEVEL_ALIASES.get(str(value).strip().lower())
    if level is None:
        raise SocioSegDataError(f"{where}: unknown task level {value!r}; expected one of {LEVELS}")
    return level


def _open_image(source, where: str, max_pixels: int | None) -> Image.Image:
    """Open and fully decode an image (path, bytes, dict from datasets, or PIL image), size checked first."""
    try:
        return open_image(source, where, max_pixels)
    except ValueError as err:
        raise SocioSegDataError(str(err)) from err


def _as_feature(source, decoded: Image.Image):
    if isinstance(source, (str, Path)):
        return {"path": str(source), "bytes": None}
    if isinstance(source, dict):
        return {"path": source.get("path"), "bytes": source.get("bytes")}
    if isinstance(source, (bytes, bytearray)):
        return {"path": None, "bytes": bytes(source)}
    return decoded


def build_record(sample_id: str, problem, map_src, sat_src, mask_src, level, where: str,
                 max_pixels: int | None = MAX_IMAGE_PIXELS) -> dict:
    """Validate one sample and derive its targets. Raises `SocioSegDataError` naming it."""
    where = f"sample {sample_id!r} ({where})"
    if not isinstance(problem, str) or not problem.strip():
        raise SocioSegDataError(f"{where}: empty or missing 'problem' (the query text)")
    try:
        check_query(problem, f"{where} problem")
    except ValueError as err:
        raise SocioSegDataError(str(err)) from None
    map_image = _open_image(map_src, f"{where} map_image", max_pixels)
    sat_image = _open_image(sat_src, f"{where} sat_image", max_pixels)
    mask_image = _open_image(mask_src, f"{where} mask_label", max_pixels)
    for name, image in (("mask", mask_image), ("map", map_image)):
        if image.size != sat_image.size:
            raise SocioSegDataError(
                f"{where}: {name} is {image.size[0]}x{image.size[1]} but the satellite image is "
                f"{sat_image.size[0]}x{sat_image.size[1]}; they must be the same size")
    try:
        check_mask_format(mask_image, f"{where} mask_label")
    except ValueError as err:
        raise SocioSegDataError(str(err)) from err
    mask = mask_to_array(mask_image)
    boxes = mask_to_boxes(mask)
    return {
        "id": str(sample_id),
        "problem": problem.strip(),
        # keep the sources (paths / encoded bytes), not decoded pixels: a split stays small in memory
        "map_image": _as_feature(map_src, map_image),
        "sat_image": _as_feature(sat_src, sat_image),
        "mask_label": _as_feature(mask_src, mask_image),
        "level": normalize_level(level, where),
        "gt_boxes": boxes,
        "num_objects": len(boxes),
    }


def _raw_samples(split_dir: Path, levels: dict) -> Iterator[tuple]:
    for sample_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
        sample_id = sample_dir.name
        question_path = sample_dir / "question.json"
        where = str(sample_dir)
        try:
            if question_path.stat().st_size > MAX_QUESTION_BYTES:
                raise SocioSegDataError(f"sample {sample_id!r} ({question_path}): larger than "
                                        f"{MAX_QUESTION_BYTES} bytes")
            question = json.loads(question_path.read_bytes().decode("utf-8"))
        except SocioSegDataError as err:
            yield sample_id, err
            continue
        except FileNotFoundError:
            yield sample_id, SocioSegDataError(f"sample {sample_id!r} ({question_path}): file not found")
            continue
        except UnicodeDecodeError as err:
            yield sample_id, SocioSegDataError(f"sample {sample_id!r} ({question_path}): not UTF-8 text ({err.reason} "
                                               f"at byte {err.start})")
            continue
        except json.JSONDecodeError as err:
            yield sample_id, SocioSegDataError(f"sample {sample_id!r} ({question_path}): invalid JSON ({err})")
            continue
        except RecursionError:
            yield sample_id, SocioSegDataError(f"sample {sample_id!r} ({question_path}): JSON nested too deeply")
            continue
        if not isinstance(question, dict):
            yield sample_id, SocioSegDataError(f"sample {sample_id!r} ({question_path}): expected a JSON object")
            continue
        level = question.get("level", levels.get(sample_id))
        yield sample_id, (question.get("problem"), str(sample_dir / "map.png"), str(sample_dir / "sat.png"),
                          str(sample_dir / "mask.png"), level, where)


def _hf_samples(dataset: datasets.Dataset, levels: dict, where: str) -> Iterator[tuple]:
    missing = {"problem", "map_image", "sat_image", "mask_label"} - set(dataset.column_names)
    if missing:
        raise SocioSegDataError(f"{where}: missing column(s) {sorted(missing)}; have {dataset.column_names}")
    for name in ("map_image", "sat_image", "mask_label"):
        if isinstance(dataset.features[name], datasets.Image):
            dataset = dataset.cast_column(name, datasets.Image(decode=False))
    for index, row in enumerate(dataset):
        sample_id = str(row["id"]) if row.get("id") is not None else f"{index:06d}"
        level = row.get("level") or levels.get(sample_id)
        yield sample_id, (row["problem"], row["map_image"], row["sat_image"], row["mask_label"], level,
                          f"{where} row {index}")


def _read_levels(levels) -> dict:
    if levels is None:
        return {}
    if isinstance(levels, dict):
        return {str(k): v for k, v in levels.items()}
    path = Path(levels)
    try:
        mapping = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise SocioSegDataError(f"{path}: cannot read the level mapping ({err})") from err
    if not isinstance(mapping, dict):
        raise SocioSegDataError(f"{path}: expected a JSON object {{id: level}}")
    return {str(k): v for k, v in mapping.items()}


def _source_samples(source: str, split: str, levels: dict, cache_dir) -> Iterator[tuple]:
    root = Path(source)
    if root.is_dir():
        split_dir = root / split
        if split_dir.is_dir() and any((p / "question.json").exists() or (p / "sat.png").exists()
                                      for p in split_dir.iterdir() if p.is_dir()):
            yield from _raw_samples(split_dir, levels)
            return
        if (root / "dataset_dict.json").exists() or (root / "state.json").exists():
            loaded = datasets.load_from_disk(str(root))
            if isinstance(loaded, datasets.DatasetDict):
                if split not in loaded:
                    raise SocioSegDataError(f"{root}: no split {split!r}; have {list(loaded)}")
                loaded = loaded[split]
            yield from _hf_samples(loaded, levels, str(root))
            return
        parquet = sorted(root.glob(f"{split}*.parquet")) + sorted(root.glob(f"data/{split}-*.parquet")) \
            + sorted((root / split).glob("*.parquet"))
        if parquet:
            loaded = datasets.load_dataset("parquet", data_files=[str(p) for p in parquet], split="train",
                                           cache_dir=cache_dir)
            yield from _hf_samples(loaded, levels, str(root))
            return
        raise SocioSegDataError(
            f"{root}: not a SocioSeg source for split {split!r}: expected {root}/{split}/<id>/{{{','.join(RAW_FILES)}}}, "
            f"a dataset saved with save_to_disk, or {split}*.parquet files"
        )
    if root.exists():
        raise SocioSegDataError(f"{root}: expected a directory or a hub dataset id")
    try:
        loaded = datasets.load_dataset(source, split=split, cache_dir=cache_dir)
    except Exception as err:  # the hub client raises many types; re-raise with the source named
        raise SocioSegDataError(
            f"{source}: could not load split {split!r} from the hub ({type(err).__name__}: {err}). "
            "Offline? Download it once (see data/README.md) and pass the local directory."
        ) from err
    yield from _hf_samples(loaded, levels, source)


def skipped_invalid(dataset: datasets.Dataset) -> int:
    """How many invalid samples `load_socioseg(skip_invalid=True)` left out of this dataset."""
    description = dataset.info.description or ""
    return int(description.split("skipped_invalid=", 1)[1]) if "skipped_invalid=" in description else 0


def load_socioseg(source: str = SOCIOSEG_HUB_ID, split: str = "test", *, skip_invalid: bool = False,
                  levels=None, max_samples: int | None = None, cache_dir: str | None = None,
                  max_image_pixels: int | None = MAX_IMAGE_PIXELS) -> datasets.Dataset:
    """Load one split of SocioSeg-format data as a validated `datasets.Dataset`.

    source: hub id (default `vvangfaye/SocioSeg`), a directory saved with `save_to_disk`, a
        directory of parquet files, or the raw layout root.
    skip_invalid: skip (and count, in the log and `dataset.info.description`) invalid samples
        instead of raising on the first.
    levels: optional `{id: level}` dict or JSON file, for data without a level field.
    max_image_pixels: refuse (as invalid samples) images above this many pixels, from their header.
    """
    level_map = _read_levels(levels)
    records, skipped = [], []
    for sample_id, item in _source_samples(str(source), split, level_map, cache_dir):
        try:
            if isinstance(item, Exception):
                raise item
            records.append(build_record(sample_id, *item, max_pixels=max_image_pixels))
        except SocioSegDataError as err:
            if not skip_invalid:
                raise
            skipped.append(str(err))
            logger.warning("skipping invalid sample: %s", err)
        if max_samples is not None and len(records) >= max_samples:
            break
    seen = set()
    for record in records:
        if record["id"] in seen:
            raise SocioSegDataError(f"{source}/{split}: sample id {record['id']!r} occurs more than once")
        seen.add(record["id"])
    if skipped:
        logger.warning("%s/%s: skipped %d invalid sample(s)", source, split, len(skipped))
    if not records:
        raise SocioSegDataError(f"{source}: split {split!r} has no valid samples ({len(skipped)} skipped)")
    columns = {name: [r[name] for r in records] for name in FEATURES}
    dataset = datasets.Dataset.from_dict(columns, features=FEATURES,
                                         info=datasets.DatasetInfo(description=f"skipped_invalid={len(skipped)}",
                                                                   features=FEATURES))
    return dataset
