"""Gradient-free two-stage inference, shared by `predict` and `evaluate`.

`Predictor.predict(samples)` runs, for a batch of samples: stage-1 generation (batched, left
padded) → `pipeline.stage_transition` (SAM2 once per distinct image, batched decode, drafts) →
stage-2 generation → `pipeline.final_masks`. The stage transition is the trainer's code.
Greedy decoding unless a temperature is given; sampling then uses exactly the given top-p and top-k
(None: off — never a checkpoint's generation_config defaults), reseeded with `seed` per call.
`backend="vllm"` generates both stages through vLLM instead (`vllm_inference.VLLMPolicy`: same prompts,
same outputs); SAM2 and everything else are the same code. `Predictor.predict_scene` runs it over the tiles
of a whole scene (`socioreasoner.inference.scene`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from socioreasoner.inference.vllm_backend import VLLMPolicy, require_vllm, resolve_backend
from socioreasoner.method.pipeline import (
    FinalResult,
    PromptSettings,
    Sample,
    Stage1Result,
    final_masks,
    single_stage_result,
    stage_transition,
    with_images,
)
from socioreasoner.models.backbones import (
    POLICY_TYPES,
    load_policy,
    resolve_frame,
    warn_if_prompt_opens_think,
)
from socioreasoner.models.grabcut import GRABCUT, make_segmenter
from socioreasoner.models.model_types import (
    SAM2_TYPES,
    VLLM_FAMILIES,
    VLLM_POLICY_TYPES,
    check_model_type,
    model_config,
)
from socioreasoner.models.qwen_processor import load_qwen_processor
from socioreasoner.models.segmenter import DEFAULT_SAM2

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "vvangfaye/SocioReasoner-3B"


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
    return torch.device(device)


@dataclass
class Prediction:
    sample: Sample
    stage1_text: str
    stage1: Stage1Result
    stage2_text: str
    final: FinalResult
    timings: dict = field(default_factory=dict)
    single_stage: bool = False  # one generation (`PromptSettings.rollout`): stage1 mirrors final, both texts are it

    @property
    def mask(self) -> np.ndarray:
        return self.final.mask


def stage_records(prediction: Prediction, offset: tuple[int, int] = (0, 0)) -> tuple[dict, dict]:
    """Both stages' think and answer text, parse error, prompts (original-image pixels, shifted by `offset`: a
    tile's origin in its scene) and mask area: the part of `result.json` a scene's tile records share."""
    stage1, final = prediction.stage1, prediction.final
    dx, dy = offset

    def shift(box):
        return [box[0] + dx, box[1] + dy, box[2] + dx, box[3] + dy]

    return ({"think": stage1.parsed.think, "answer": stage1.parsed.answer, "parse_error": stage1.parsed.error,
             "boxes": [shift(b) for b in stage1.boxes_original], "mask_area": int(stage1.mask.sum())},
            {"think": final.parsed.think, "answer": final.parsed.answer, "parse_error": final.parsed.error,
             "objects": [{"box": shift(o["box"]), "points": [[p[0] + dx, p[1] + dy] for p in o["points"]]}
                         for o in final.objects_original],
             "mask_area": int(final.mask.sum())})


def check_vllm_family(model: str) -> None:
    """vLLM generation is wired (prompt expansion, CPU patches) and tested for `VLLM_POLICY_TYPES`."""
    check_model_type(model, POLICY_TYPES, "policy (--model)")
    found = model_config(model)["model_type"]
    if found not in VLLM_POLICY_TYPES:
        raise ValueError(f"{model}: --backend vllm is wired for {VLLM_FAMILIES} only (a {found} model); "
                         "use --backend hf")


CPU_TOKEN_BUDGET_WARNING = 256  # above this, a CPU run says how slow it will be (1,024 tokens: 75-81 s a pair here)
TOY_TOKEN_BUDGET = 128  # what the README's tiny-model commands use


class Predictor:
    """Policy + processor + SAM2, loaded once; `predict` runs both stages on a batch of samples."""

    def __init__(self, model: str = DEFAULT_MODEL, sam: str = DEFAULT_SAM2, device: str = "auto",
                 settings: PromptSettings | None = None, temperature: float | None = None,
                 max_new_tokens: int = 1024, top_p: float | None = None, seed: int = 0, top_k: int | None = None,
                 backend: str = "hf", vllm_gpu_memory_utilization: float = 0.5):
        self.model_id, self.sam_id = model, sam
        self.backend = backend = resolve_backend(backend)
        if backend == "vllm":
            check_vllm_family(model)
            require_vllm()
        self.device = resolve_device(device)
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = self.vllm = None
        try:
            check_model_type(model, POLICY_TYPES, "policy (--model)")
            config = model_config(model)
            self.settings = resolve_frame(settings or PromptSettings(), config)  # the family's coordinate frame
            max_pixels = max(self.settings.max_pixels, (2 * self.settings.factor) ** 2)
            if sam != GRABCUT:
                check_model_type(sam, SAM2_TYPES, "segmenter (--sam)")
            self.processor = load_qwen_processor(model, max_pixels=max_pixels)
            warn_if_prompt_opens_think(self.processor)
            if backend == "hf":
                self.model = load_policy(model, dtype=dtype).to(self.device)
                self.model.eval()
        except OSError as err:
            raise OSError(f"cannot load the policy {model!r} (a hub id needs network access; or give a local "
                          f"directory): {err}") from err
        try:
            self.segmenter = make_segmenter(sam, device=self.device)
        except OSError as err:
            raise OSError(f"cannot load SAM2 {sam!r}: {err}") from err
        self.generation = {"max_new_tokens": max_new_tokens, "do_sample": temperature is not None}
        if self.device.type == "cpu" and max_new_tokens > CPU_TOKEN_BUDGET_WARNING:
            logger.warning("generating up to %d new tokens per stage on the CPU: a pair can take over a minute "
                           "(--max-new-tokens %d is enough for the tiny and toy models)", max_new_tokens,
                           TOY_TOKEN_BUDGET)
        if temperature is not None:  # explicit: a checkpoint's generation_config may carry its own top_k / top_p
            self.generation.update(temperature=temperature, top_p=top_p if top_p is not None else 1.0,
                                   top_k=top_k if top_k is not None else 0)
        self.seed = seed
        self.num_generate_calls = 0  # policy calls (tests count them to check resumption)
        if backend == "vllm":  # after SAM2 loaded: a bad --sam fails before the engine starts
            self.vllm = VLLMPolicy(model, self.processor, str(dtype).removeprefix("torch."),
                                   self.settings.min_pixels, max_pixels, max_new_tokens, temperature, top_p, top_k,
                                   seed, vllm_gpu_memory_utilization)

    def generate(self, messages: list[list[dict]]) -> list[str]:
        """One batched generation over conversations; returns the completion texts."""
        texts = self._generate_hf(messages) if self.vllm is None else self.vllm.generate(messages)
        self.num_generate_calls += 1
        return texts

    @torch.inference_mode()
    def _generate_hf(self, messages: list[list[dict]]) -> list[str]:
        """`generate` of the HF model (left padding)."""
        inputs = self.processor.apply_chat_template(messages, tokenize=True, return_dict=True,
                                                    add_generation_prompt=True, return_tensors="pt",
                                                    processor_kwargs={"padding": True})
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        if self.generation["do_sample"]:
            torch.manual_seed(self.seed)
        out = self.model.generate(**inputs, **self.generation, pad_token_id=self.processor.tokenizer.pad_token_id)
        return self.processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

    def _generate_first(self, samples: list[Sample]) -> list[str]:
        """The first generation of a batch: stage 1's prompt, or the single stage's, on [map, satellite]."""
        return self.generate([with_images(s.first_messages(self.settings), [s.map_qwen, s.sat_qwen]) for s in samples])

    def predict_scene(self, map_path, sat_path, query: str, out, **options):
        """Segment `query` over a whole scene of any size (tiled; `scene.SceneOptions` lists the options:
        tile, overlap, batch_size, resize_map, map_resampling, overview_side, overwrite, progress) and write its
        GIS outputs into `out`; returns a `scene.SceneResult`. Needs the geo extra."""
        from socioreasoner.inference.scene import SceneOptions, predict_scene

        return predict_scene(self, map_path, sat_path, query, out, SceneOptions(**options))

    def predict(self, samples: list[Sample]) -> list[Prediction]:
        """Both stages on a batch of samples."""
        *_, predictions = self.predict_stages(samples)
        return predictions

    def predict_stages(self, samples: list[Sample]):
        """`predict` step by step, for callers that show progress (the web app): yields the stage-1 results
        (`Stage1Result` per sample: think text, boxes, mask and the stage-2 drafts) once stage 1 is done, then
        the list of `Prediction`s. A single-stage rollout yields its answers in stage 1's shape, then the list."""
        if self.settings.single_stage:
            yield from self._predict_single_stage(samples)
            return
        t0 = time.perf_counter()
        stage1_texts = self._generate_first(samples)
        t1 = time.perf_counter()
        embeddings = self.segmenter.encode([s.sat_image for s in samples])
        stage1 = [stage_transition(self.segmenter, emb, s, [text], self.settings)[0]
                  for s, emb, text in zip(samples, embeddings, stage1_texts)]
        t2 = time.perf_counter()
        yield stage1
        t2_resume = time.perf_counter()  # the caller's time between the stages is not ours
        stage2_texts = self.generate([with_images(r.messages, [r.map_draft, r.sat_draft]) for r in stage1])
        t3 = time.perf_counter()
        finals = [final_masks(self.segmenter, emb, s, [text], self.settings)[0]
                  for s, emb, text in zip(samples, embeddings, stage2_texts)]
        t4 = time.perf_counter()
        per_sample = 1 / len(samples)
        timings = {"stage1_generate_s": (t1 - t0) * per_sample, "sam_and_render_s": (t2 - t1 + t4 - t3) * per_sample,
                   "stage2_generate_s": (t3 - t2_resume) * per_sample,
                   "total_s": (t4 - t0 - (t2_resume - t2)) * per_sample}
        yield [Prediction(s, a, r, b, f, dict(timings))
               for s, a, r, b, f in zip(samples, stage1_texts, stage1, stage2_texts, finals)]

    def _predict_single_stage(self, samples: list[Sample]):
        """`predict_stages` of a single-stage policy: one generation (boxes + points) -> SAM2 -> final masks."""
        t0 = time.perf_counter()
        texts = self._generate_first(samples)
        t1 = time.perf_counter()
        embeddings = self.segmenter.encode([s.sat_image for s in samples])
        finals = [final_masks(self.segmenter, emb, s, [text], self.settings)[0]
                  for s, emb, text in zip(samples, embeddings, texts)]
        as_stage1 = [single_stage_result(s, f, text) for s, f, text in zip(samples, finals, texts)]
        t2 = time.perf_counter()
        yield as_stage1
        per_sample = 1 / len(samples)
        timings = {"stage1_generate_s": (t1 - t0) * per_sample, "sam_and_render_s": (t2 - t1) * per_sample,
                   "stage2_generate_s": 0.0, "total_s": (t2 - t0) * per_sample}
        yield [Prediction(s, text, r, text, f, dict(timings), single_stage=True)
               for s, text, r, f in zip(samples, texts, as_stage1, finals)]
