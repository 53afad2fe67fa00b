"""Try the model in a browser: upload a map and a satellite image (or pick a sample), type a query, and watch
the two stages — stage-1 think text and boxes, the drafts the model saw, stage-2 think text, the final mask.

    pip install -e ".[app]"
    python -m socioreasoner.app --model vvangfaye/SocioReasoner-3B --sam facebook/sam2-hiera-large
    python -m socioreasoner.app --model runs/tiny/qwen2_5_vl --sam runs/tiny/sam2 --dataset runs/toy_city

The page calls the same `Predictor` as `predict` (`Predictor.predict_stages`: the page updates after stage 1
and again at the end) and writes the same files (`predict.write_outputs`), offered as downloads: mask PNG,
GeoJSON, result JSON, and a mask GeoTIFF when the satellite image was a georeferenced GeoTIFF. One model load
per process; runs are queued one at a time (`concurrency_limit=1`), so concurrent users never run two
generations at once on one GPU. Bad uploads (not an image, too many pixels) get a one-line message in the page.
Samples: the bundled `data/toy_sample/` pairs (source checkouts) and, with `--dataset`, a local SocioSeg-format
dataset; choosing one fills the inputs and shows its ground truth and the IoU.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from socioreasoner.data import LEVELS
from socioreasoner.images import mask_array
from socioreasoner.inference.predictor import DEFAULT_MODEL, Predictor
from socioreasoner.inference.scene_outputs import write_mask_geotiff
from socioreasoner.io import check_writable_dir, removed_if_refused
from socioreasoner.method.metrics import mask_iou
from socioreasoner.method.pipeline import PromptSettings, Sample
from socioreasoner.method.prompts import check_query
from socioreasoner.method.render import GT_MASK_COLOUR, draw_boxes, overlay_mask
from socioreasoner.models.backbones import prompt_settings_for_model
from socioreasoner.models.segmenter import DEFAULT_SAM2
from socioreasoner.predict import load_pair, raster_size, write_outputs

logger = logging.getLogger("socioreasoner.app")

TOY_SAMPLES = Path(__file__).resolve().parents[1] / "data" / "toy_sample"
MAX_SAMPLES_LISTED = 200
LEVEL_CHOICES = ["unknown", *LEVELS]
IMAGE_HEIGHT = 320
MAX_UPLOAD = "200mb"  # Gradio refuses larger uploads; the pixel limit (`images.MAX_IMAGE_PIXELS`) applies below it


class InputError(ValueError):
    """What the page shows the user (one line), instead of a traceback."""


@dataclass
class SampleChoice:
    """A sample the user can pick: its files, query, level, and ground-truth mask."""

    label: str
    map_path: str
    sat_path: str
    query: str
    level: str | None
    gt_path: str


def list_samples(root: Path, split: str, out: Path, prefix: str) -> list[SampleChoice]:
    """Samples of a SocioSeg-format dataset (loaded and validated by `load_socioseg`), their images written under
    `out` (a dataset may hold them as bytes) so the page can show and reuse them."""
    from socioreasoner.data import load_socioseg

    dataset = load_socioseg(str(root), split, max_samples=MAX_SAMPLES_LISTED)
    folder = Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=out))
    choices = []
    for index, row in enumerate(dataset):
        paths = {}
        for key, name in (("map_image", "map"), ("sat_image", "sat"), ("mask_label", "gt")):
            paths[name] = folder / f"{index:05d}_{name}.png"
            row[key].convert("RGB" if key != "mask_label" else row[key].mode).save(paths[name])
        choices.append(SampleChoice(f"{prefix}: {row['id']} — {row['problem']}", str(paths["map"]),
                                    str(paths["sat"]), row["problem"], row["level"], str(paths["gt"])))
    return choices


@contextlib.contextmanager
def decoding(predictor: Predictor, sample: bool, temperature: float, max_new_tokens: int):
    """The page's decoding options for one run (greedy unless `sample`), restored afterwards."""
    saved = dict(predictor.generation)
    if not 1 <= int(max_new_tokens) <= 4096:
        raise InputError(f"max new tokens {max_new_tokens}: expected 1 to 4096")
    predictor.generation = {"max_new_tokens": int(max_new_tokens), "do_sample": bool(sample)}
    if sample:
        if not 0 < float(temperature) <= 5:
            raise InputError(f"temperature {temperature}: expected a number in (0, 5]")
        predictor.generation.update(temperature=float(temperature), top_p=1.0, top_k=0)
    try:
        yield
    finally:
        predictor.generation = saved


class App:
    """The page's logic, without Gradio (tested directly); `build_ui` wires it to components."""

    def __init__(self, predictor: Predictor, out: Path, samples: list[SampleChoice]):
        self.predictor, self.out, self.samples = predictor, Path(out), samples

    def pick(self, label: str):
        """A chosen sample's (map path, satellite path, query, level)."""
        for choice in self.samples:
            if choice.label == label:
                return choice.map_path, choice.sat_path, choice.query, choice.level or "unknown"
        raise InputError(f"no sample {label!r}")

    def ground_truth(self, map_path: str, sat_path: str) -> np.ndarray | None:
        """The chosen sample's mask, while the inputs are still that sample's files."""
        for choice in self.samples:
            if (choice.map_path, choice.sat_path) == (map_path, sat_path):
                with Image.open(choice.gt_path) as image:
                    return mask_array(image)
        return None

    def run(self, map_path, sat_path, query, level, sample=False, temperature=0.7, max_new_tokens=1024):
        """Yields the page's state after stage 1 and at the end (dicts; `build_ui` maps them to components)."""
        if not map_path or not sat_path:
            raise InputError("upload a map and a satellite image (or pick a sample) first")
        try:
            query = check_query(query, "query")
        except ValueError as err:
            raise InputError(str(err)) from None
        try:
            map_image, sat_image, georef = load_pair(str(map_path), str(sat_path))
        except (OSError, ValueError) as err:
            raise InputError(_one_line(err)) from None
        notes = []
        map_size = raster_size(str(map_path))
        if map_size is not None and map_size != sat_image.size:
            notes.append(f"the map ({map_size[0]}x{map_size[1]}) was resized to the satellite image's "
                         f"{sat_image.size[0]}x{sat_image.size[1]}")
        gt = self.ground_truth(str(map_path), str(sat_path))
        sample_ = Sample.from_images(query, map_image, sat_image, self.predictor.settings)
        with decoding(self.predictor, sample, temperature, max_new_tokens):
            steps = self.predictor.predict_stages([sample_])
            (stage1,) = next(steps)
            shown = {"stage1_think": _think(stage1.parsed), "stage1_image": draw_boxes(sat_image, stage1.boxes_original),
                     "drafts": [stage1.map_draft, stage1.sat_draft], "notes": notes}
            yield {**shown, "status": "stage 1 done; stage 2 running…"}
            (prediction,) = next(steps)
        run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=self.out))  # ours: never named by an upload or id
        record = write_outputs(prediction, run_dir, self.predictor.model_id, self.predictor.sam_id, georef,
                               geojson=True, parse=self.predictor.settings.parse, backend=self.predictor.backend)
        files = [run_dir / "mask.png", run_dir / "mask.geojson", run_dir / "result.json"]
        if georef is not None:
            write_mask_geotiff(run_dir / "mask.tif", prediction.final.mask, georef)
            files += [run_dir / "mask.gpkg", run_dir / "mask.tif"]
        with Image.open(run_dir / "overlay.png") as image:  # write_outputs drew it, as predict does
            final = image.convert("RGB")
        timings = record["timings"]
        status = (f"{len(record['stage2']['objects'])} object(s); stage 1 {timings['stage1_generate_s']:.1f} s, "
                  f"SAM2 + render {timings['sam_and_render_s']:.1f} s, stage 2 {timings['stage2_generate_s']:.1f} s")
        gt_image, iou = None, None
        if gt is not None and gt.shape == prediction.final.mask.shape:
            iou = mask_iou(prediction.final.mask, gt)
            gt_image = overlay_mask(sat_image, gt, GT_MASK_COLOUR)
            status += f"; IoU with the ground truth {iou:.3f}" + (f" (level: {level})" if level in LEVELS else "")
        yield {**shown, "stage2_think": _think(prediction.final.parsed), "final": final, "gt": gt_image, "iou": iou,
               "status": status, "files": [str(f) for f in files], "record": record}


def _think(parsed) -> str:
    text = parsed.think if parsed.think is not None else "(no <think> block)"
    if parsed.error:
        text += f"\n\n[answer not used: {parsed.error}]"
    return text


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


def page_states(app: App, *run_args):
    """`app.run`'s states for the page; a refused input becomes the page's one-line error, and one log line on the
    console (Gradio would print a traceback for it)."""
    import gradio as gr

    try:
        yield from app.run(*run_args)
    except InputError as err:
        logger.info("refused: %s", err)
        raise gr.Error(str(err), print_exception=False) from None


def build_ui(app: App):
    """The Gradio page for `app`."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from an offline tool
    import gradio as gr

    with gr.Blocks(title="socioreasoner", analytics_enabled=False) as page:
        gr.Markdown("## socioreasoner — urban socio-semantic segmentation\nUpload a digital map and a satellite "
                    "image of the same place, type what to find (a name, a class or a function), and run.")
        with gr.Row():
            map_file = gr.File(label="map image", type="filepath", elem_id="map_file")
            sat_file = gr.File(label="satellite image (PNG/JPEG, or GeoTIFF)", type="filepath", elem_id="sat_file")
            with gr.Column():
                picker = gr.Dropdown([c.label for c in app.samples], label="…or pick a sample", value=None,
                                     elem_id="sample_picker")
                query = gr.Textbox(label="query", placeholder="school", elem_id="query")
                level = gr.Dropdown(LEVEL_CHOICES, value="unknown", label="task level (if known)")
        with gr.Accordion("advanced", open=False):
            sample = gr.Checkbox(False, label="sample (default: greedy)")
            temperature = gr.Slider(0.05, 2.0, value=0.7, step=0.05, label="temperature")
            max_new_tokens = gr.Number(app.predictor.generation["max_new_tokens"], precision=0,
                                       label="max new tokens", elem_id="max_new_tokens")
        run = gr.Button("Run", variant="primary", elem_id="run")
        status = gr.Markdown(elem_id="status")
        with gr.Row():
            stage1_image = gr.Image(label="stage 1: boxes on the satellite image", elem_id="stage1_image",
                                    height=IMAGE_HEIGHT)
            stage1_think = gr.Textbox(label="stage-1 think", lines=8, elem_id="stage1_think")
        with gr.Row():
            drafts = gr.Gallery(label="stage-2 input: the drafts the model saw (map, satellite)", columns=2,
                                elem_id="drafts", height=IMAGE_HEIGHT)
            stage2_think = gr.Textbox(label="stage-2 think", lines=8, elem_id="stage2_think")
        final = gr.Image(label="final: map | stage-1 boxes and draft | final mask, boxes, points",
                         elem_id="final_overlay", height=IMAGE_HEIGHT)
        with gr.Row():
            gt = gr.Image(label="ground truth (a picked sample)", elem_id="ground_truth", height=IMAGE_HEIGHT)
            files = gr.File(label="downloads", file_count="multiple", elem_id="downloads")

        picker.change(lambda label: app.pick(label) if label else (gr.skip(),) * 4, picker,
                      [map_file, sat_file, query, level])

        def on_run(map_path, sat_path, query_text, level_value, sample_value, temperature_value, tokens):
            for state in page_states(app, map_path, sat_path, query_text, level_value, sample_value,
                                     temperature_value, tokens if tokens is not None else 1024):
                for note in state.get("notes", []):
                    gr.Warning(note)
                yield (state["status"], state["stage1_image"], state["stage1_think"], state["drafts"],
                       state.get("stage2_think", ""), state.get("final"), state.get("gt"), state.get("files"))

        run.click(on_run, [map_file, sat_file, query, level, sample, temperature, max_new_tokens],
                  [status, stage1_image, stage1_think, drafts, stage2_think, final, gt, files], concurrency_limit=1)
    return page


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m socioreasoner.app", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=DEFAULT_MODEL, help="policy: hub id or directory")
    parser.add_argument("--sam", default=DEFAULT_SAM2, help="SAM2 (transformers format): hub id or directory")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dataset", help="a local SocioSeg-format dataset whose samples the page offers")
    parser.add_argument("--split", default="val", help="the --dataset split")
    parser.add_argument("--out", default="runs/app", help="where each run's files are written")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0 to serve other machines")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--max-pixels", type=int, default=PromptSettings.max_pixels)
    return parser


def make_app(args: argparse.Namespace) -> App:
    """Check the arguments, list the samples, load the model once; one-line errors (ValueError/OSError)."""
    out = Path(args.out)
    check_writable_dir(out, "--out")
    samples = []
    if TOY_SAMPLES.is_dir():
        samples += list_samples(TOY_SAMPLES, "val", out, "toy sample")
    if args.dataset:
        if not Path(args.dataset).is_dir():
            raise ValueError(f"--dataset {args.dataset}: not a directory")
        samples += list_samples(Path(args.dataset), args.split, out, "dataset")
    settings = prompt_settings_for_model(args.model, max_pixels=args.max_pixels)
    predictor = Predictor(args.model, args.sam, args.device, settings)
    return App(predictor, out, samples)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        import gradio  # noqa: F401
    except ImportError:
        print("error: the web app needs Gradio (the app extra): pip install -e '.[app]'", file=sys.stderr)
        return 2
    try:
        with removed_if_refused(Path(args.out)):
            app = make_app(args)
    except (OSError, ValueError) as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    page = build_ui(app)
    page.queue(default_concurrency_limit=1).launch(server_name=args.host, server_port=args.port,
                                                   allowed_paths=[str(Path(args.out).resolve())],
                                                   max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
