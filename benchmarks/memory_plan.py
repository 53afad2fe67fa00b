"""Peak GPU memory of a training recipe, estimated per component from the model configs alone (no GPU, no weights).

    python benchmarks/memory_plan.py --config recipes/socioreasoner_3b_24gb_lora.yaml
    python benchmarks/memory_plan.py --config recipes/socioreasoner_3b_1gpu_lora.yaml --gpu-gib 80 \\
        --set use_vllm=false per_device_train_batch_size=8 steps_per_generation=1 max_completion_length=128

The models are built on PyTorch's meta device from their configs (a local directory, the hub cache, or the
architectures `socioreasoner.models.tiny` knows: Qwen2.5-VL-3B and the four SAM2 sizes), so parameter and LoRA counts
are exact; PEFT wraps the meta model with the recipe's LoRA settings. Activations follow the shapes of one
micro-batch: each stage-1 row travels with its stage-2 row (2 x per_device_train_batch_size sequences), each
sequence two images in the Qwen frame + the prompt text (tokenised with the family's chat template) + the
completion. The per-term formulas, and what each counts, are in the functions below; `tests/test_memory_plan.py`
checks them against allocations measured on CPU with tiny models (weights and optimiser state exactly; activations,
log-prob pass and generation within a factor of 2).

Phases, each on top of what stays resident (policy weights, trainable state, reference, SAM2):
  generation  HF: the KV cache and one layer's prefill for a whole generation batch; vLLM colocate: its share of
              the card (`vllm_gpu_memory_utilization` x the card), which with sleep mode it releases for training
  training    one micro-batch forward + backward: checkpointed layer inputs, one layer's recomputation and its
              gradients, the vision tower (gradients reach it under PEFT + gradient checkpointing: transformers'
              `enable_input_require_grads` hooks the vision patch embedding too), the LM-head log-prob pass
  reward      the SAM2 image encoder on a batch of satellite images
Printed: the largest terms, each phase's total, and the peak as `torch.cuda.max_memory_allocated` would see it and
as nvidia-smi would (+ the CUDA context, `--context-gib`).
"""

from __future__ import annotations

import argparse
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from socioreasoner.method.frame import smart_resize  # noqa: E402

GIB = 2**30
TRL_TOKEN_TILE, TRL_VOCAB_TILE = 4096, 32768  # trl/kernels/chunked_logprob.py (TRL 1.16): the fused LM head's tile
CPU_MAX_SAVED_PROBS = 2**29  # socioreasoner.compat.trl_cpu.MAX_SAVED_PROBS: the CPU log-prob kernel keeps probabilities
SAM2_ENCODE_BATCH = 8  # SamSegmenter.encode's default batch
SAM2_INPUT = 1024
VLLM_WORKSPACE = GIB  # vLLM's own activations and sampler workspace (assumed: not measurable here)
DEFAULT_IMAGE = (768, 768)  # SocioSeg's tiles


# ---------- models on the meta device ----------

def known_config(source: str):
    """The architectures this project can build offline, by hub id (`socioreasoner.models.tiny`)."""
    from socioreasoner.models import tiny

    builders = {"Qwen/Qwen2.5-VL-3B-Instruct": tiny.qwen2_5_vl_3b_config, **{
        f"facebook/sam2-hiera-{size}": (lambda size=size: tiny.sam2_config(size)) for size in tiny.SAM2_SIZES}}
    builder = builders.get(source) or builders.get(source.replace("sam2.1", "sam2"))
    return builder() if builder else None


def load_config(source: str):
    """A transformers config from a directory or the hub cache (offline), else a known architecture."""
    from transformers import AutoConfig

    config = known_config(str(source))
    if config is not None:
        return config
    try:
        return AutoConfig.from_pretrained(str(source), local_files_only=True)
    except (OSError, ValueError) as err:
        raise SystemExit(f"{source}: no config here or in the hub cache ({err}); pass a directory with its "
                         "config.json") from None


def meta_model(config):
    """The model of `config` with meta tensors (shapes, no memory)."""
    from socioreasoner.models.backbones import BACKBONES, policy_class

    with torch.device("meta"):
        if config.model_type in BACKBONES:
            return policy_class(config.model_type)(config)
        from transformers import Sam2Model

        return Sam2Model(config)


def count(parameters) -> int:
    return sum(p.numel() for p in parameters)


def lora_parameters(model, recipe: dict) -> tuple[int, list[str]]:
    """(trainable LoRA parameters, adapted module names) of PEFT's wrapping of `model` with the recipe's settings."""
    from peft import LoraConfig, get_peft_model

    targets = recipe.get("lora_target_modules") or "all-linear"
    if isinstance(targets, list) and len(targets) == 1:
        targets = targets[0]  # as TRL's ModelConfig: one entry is a regular expression (or "all-linear")
    peft_model = get_peft_model(model, LoraConfig(r=recipe.get("lora_r", 16), lora_alpha=recipe.get("lora_alpha", 32),
                                                  lora_dropout=recipe.get("lora_dropout", 0.05),
                                                  target_modules=targets))
    adapted = [name for name, module in peft_model.named_modules() if hasattr(module, "lora_A") and module.lora_A]
    return count(p for p in peft_model.parameters() if p.requires_grad), adapted


# ---------- shapes ----------

@dataclass
class Shapes:
    """What the formulas need from the policy config and the recipe."""

    hidden: int
    intermediate: int
    layers: int
    kv_layers: int            # layers with a KV cache (Qwen3.5: its full-attention layers)
    kv_width: int             # num_key_value_heads x head_dim
    vocab: int
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    patches_per_image: int
    image_tokens: int         # LM tokens per image (patches / merge^2)
    stage1_prompt: int        # tokens, both images included
    stage2_prompt: int
    completion: int
    micro_batch: int          # stage-1 rows per micro-batch (each brings its stage-2 row)
    generation_rows: int      # rows per generation call (per device)
    lora_inputs: int = 0      # sum of input widths of the LoRA-adapted LM linears of one layer (dropout copies)
    lora_rank: int = 0
    lora_modules: int = 0     # adapted LM linears per layer
    vision_grads: bool = True
    extra: dict = field(default_factory=dict)


def image_tokens(image_size, recipe: dict, vision) -> tuple[int, int]:
    """(patches, LM tokens) of one image in the Qwen frame of the recipe's pixel bounds."""
    patch, merge = vision.patch_size, vision.spatial_merge_size
    h, w = smart_resize(image_size[1], image_size[0], factor=patch * merge,
                        min_pixels=recipe.get("min_pixels", 3136), max_pixels=recipe.get("max_pixels", 589824))
    patches = (h // patch) * (w // patch)
    return patches, patches // merge**2


@functools.lru_cache(maxsize=8)  # building the tokenizer dominates a plan's time
def prompt_text_tokens(model_type: str, answer_tokens: int) -> tuple[int, int]:
    """Text tokens of the reference's stage-1 and stage-2 prompts through the family's chat template (images
    excluded), the stage-2 prompt quoting an answer of `answer_tokens` tokens."""
    from socioreasoner.method.prompts import stage1_prompt, stage2_prompt
    from socioreasoner.models.qwen_tokenizer import build_qwen_tokenizer

    tokenizer = build_qwen_tokenizer(qwen3=model_type != "qwen2_5_vl")
    answer = '[{"bbox_2d": [100, 200, 300, 400]}]'
    counts = []
    for messages in (stage1_prompt("Jinan Zoo", 756, 756), stage2_prompt("Jinan Zoo", 756, 756, answer)):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        counts.append(len(ids) - 2)  # the two image placeholders, counted with the images
    quoted = len(tokenizer(answer)["input_ids"])
    return counts[0], counts[1] - quoted + answer_tokens


def shapes_of(config, recipe: dict, adapted: list[str], image_size=DEFAULT_IMAGE, answer_tokens: int = 64) -> Shapes:
    text, vision = config.get_text_config(), config.vision_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    layer_types = getattr(text, "layer_types", None) or ["full_attention"] * text.num_hidden_layers
    patches, tokens = image_tokens(image_size, recipe, vision)
    text1, text2 = prompt_text_tokens(config.model_type, answer_tokens)
    lm_adapted = [n for n in adapted if ".layers.0." in n and "visual" not in n]
    widths = {"q_proj": text.hidden_size, "k_proj": text.hidden_size, "v_proj": text.hidden_size,
              "o_proj": text.num_attention_heads * head_dim, "gate_proj": text.hidden_size,
              "up_proj": text.hidden_size, "down_proj": text.intermediate_size}
    per_device = recipe.get("per_device_train_batch_size", 8)
    return Shapes(
        hidden=text.hidden_size, intermediate=text.intermediate_size, layers=text.num_hidden_layers,
        kv_layers=sum(t == "full_attention" for t in layer_types), kv_width=text.num_key_value_heads * head_dim,
        vocab=text.vocab_size, vision_hidden=vision.hidden_size, vision_intermediate=vision.intermediate_size,
        vision_depth=vision.depth, patches_per_image=patches, image_tokens=tokens,
        stage1_prompt=text1 + 2 * tokens, stage2_prompt=text2 + 2 * tokens,
        completion=recipe.get("max_completion_length", 256), micro_batch=per_device,
        generation_rows=per_device * recipe.get("steps_per_generation", recipe.get("gradient_accumulation_steps", 1)),
        lora_inputs=sum(widths.get(n.rsplit(".", 1)[-1], text.hidden_size) for n in lm_adapted),
        lora_rank=recipe.get("lora_r", 16) if recipe.get("use_peft") else 0, lora_modules=len(lm_adapted),
        # the trainer runs a tower without trainable parameters without autograd (policy.skip_frozen_vision_backward)
        vision_grads=any("visual" in n for n in adapted) if recipe.get("use_peft")
        else not recipe.get("freeze_vision_tower", False),
    )


# ---------- the terms (bytes) ----------

def layer_working_set(tokens: int, s: Shapes, act_bytes: int, lora_dropout: bool) -> int:
    """One decoder layer's forward activations and their gradients (what a checkpointed layer rebuilds in
    backward): norms, q/k/v/attention output/o-projection and residual (6 hidden + 2 kv widths), the MLP's gate,
    up, activation and product (4 intermediate), x2 for the gradients; LoRA adds a dropout copy of each adapted
    linear's input and its rank-r intermediate."""
    per_token = 2 * (6 * s.hidden + 2 * s.kv_width + 4 * s.intermediate)
    if s.lora_rank:
        per_token += (s.lora_inputs if lora_dropout else 0) + s.lora_modules * s.lora_rank
    return tokens * per_token * act_bytes


def training_terms(s: Shapes, act_bytes: int, device: str = "cuda", checkpointing: bool = True,
                   lora_dropout: bool = True) -> dict[str, int]:
    """One micro-batch's forward + backward: B stage-1 and B stage-2 sequences, padded to the longer stage."""
    sequences = 2 * s.micro_batch
    length = max(s.stage1_prompt, s.stage2_prompt) + s.completion
    tokens = sequences * length
    layer = layer_working_set(tokens, s, act_bytes, lora_dropout)
    stored = tokens * s.hidden * act_bytes * (s.layers + 2) if checkpointing else layer // 2 * s.layers
    terms = {"activations: checkpointed layer inputs" if checkpointing else "activations: all layers": stored,
             "activations: one layer recomputed + its gradients": layer,
             "attention masks (4-D, padded batch)": sequences * length * length,
             "log-prob pass (LM head)": lm_head_bytes(sequences * s.completion, s, act_bytes, device)}
    images = 2 * sequences
    patches = images * s.patches_per_image
    vision_layer = 2 * patches * (6 * s.vision_hidden + 4 * s.vision_intermediate) * act_bytes
    if s.vision_grads:
        terms["vision tower: checkpointed block inputs"] = patches * s.vision_hidden * act_bytes * (s.vision_depth + 2)
        terms["vision tower: one block recomputed + its gradients"] = vision_layer
    else:
        terms["vision tower: one block (no gradients)"] = vision_layer // 2
    return terms


def lm_head_bytes(scored_tokens: int, s: Shapes, act_bytes: int, device: str) -> int:
    """TRL's fused LM head over the scored (completion) tokens. CUDA: TRL's kernel, one [4096 x 32768] tile in the
    compute dtype at a time, the selected hidden states and their fp32 gradient. CPU: `trl_cpu.VocabLogProb`, which
    keeps the fp32 probabilities of every scored token for backward (when they fit `CPU_MAX_SAVED_PROBS`): logits/
    log-probs, probabilities and the gradient, three [tokens x vocab] fp32 tensors."""
    hidden = scored_tokens * s.hidden * (act_bytes + 4)
    if device == "cpu" and scored_tokens * s.vocab <= CPU_MAX_SAVED_PROBS:
        return 3 * scored_tokens * s.vocab * 4 + hidden
    return min(scored_tokens, TRL_TOKEN_TILE) * TRL_VOCAB_TILE * act_bytes + hidden


def generation_terms(s: Shapes, act_bytes: int) -> dict[str, int]:
    """HF `generate` for one stage's rows (stage 2's, the longer prompts): the KV cache at full length, and the
    prefill's largest transient, one layer (norm, q/k/v, attention output, MLP gate/up/product) over every prompt
    token, plus the vision tower's on every image."""
    rows, prompt = s.generation_rows, s.stage2_prompt
    kv = rows * (prompt + s.completion) * s.kv_layers * 2 * s.kv_width * act_bytes
    prefill = rows * prompt * (4 * s.hidden + 2 * s.kv_width + 3 * s.intermediate) * act_bytes
    vision = 2 * rows * s.patches_per_image * (4 * s.vision_hidden + 3 * s.vision_intermediate) * act_bytes
    return {"KV cache (HF generate)": kv, "prefill: one layer": prefill, "prefill: vision tower": vision}


def sam2_terms(config, images: int) -> dict[str, int]:
    """SAM2's fp32 weights (it is loaded whole and frozen; bf16 autocast on CUDA) and its encoder on a batch: the
    Hiera stage-1 feature map at stride 4 of the 1024-px input, ~12 tensors of it in bf16 for a block."""
    backbone = config.vision_config.backbone_config
    stride4 = (SAM2_INPUT // 4) ** 2
    return {"SAM2 weights (fp32)": count(meta_model(config).parameters()) * 4,
            "SAM2 encoder (one batch)": min(images, SAM2_ENCODE_BATCH) * stride4 * backbone.hidden_size * 12 * 2}


# ---------- the plan ----------

# Terms that are not alive at the same time as each other (a phase adds only its largest): one layer's
# recomputation, the vision block's, the LM-head pass and the prefill's transients run one after the other.
TRANSIENT = ("one layer", "one block", "log-prob pass", "prefill", "SAM2 encoder")


def is_transient(term: str) -> bool:
    return any(key in term for key in TRANSIENT)


@dataclass
class Plan:
    resident: dict[str, int]
    phases: dict[str, dict[str, int]]
    gpu_bytes: int
    context_bytes: int
    notes: list[str]

    def phase_total(self, name: str) -> int:
        """Resident + the phase's lasting terms (summed) + its largest transient term."""
        phase = self.phases[name]
        lasting = sum(v for k, v in phase.items() if not is_transient(k))
        transient = max([v for k, v in phase.items() if is_transient(k)], default=0)
        return sum(self.resident.values()) + lasting + transient

    @property
    def peak(self) -> int:
        return max(self.phase_total(name) for name in self.phases)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phase_total)

    def largest(self, n: int = 6) -> list[tuple[str, int]]:
        terms = dict(self.resident)
        for name, phase in self.phases.items():
            terms.update({f"{name}: {k}": v for k, v in phase.items()})
        return sorted(terms.items(), key=lambda kv: -kv[1])[:n]


def plan(recipe: dict, gpu_gib: float = 24.0, processes: int = 1, image_size=DEFAULT_IMAGE, answer_tokens: int = 64,
         context_gib: float = 0.5, device: str = "cuda", policy_config=None, sam_config=None) -> Plan:
    """The memory plan of `recipe` (a YAML dict) on one GPU of `gpu_gib` among `processes` (ZeRO-3 shards)."""
    config = policy_config or load_config(recipe["model_name_or_path"])
    model = meta_model(config)
    weight_bytes = 2 if recipe.get("bf16") or recipe.get("dtype") in ("bfloat16", "float16") else 4
    act_bytes = weight_bytes
    total = count(model.parameters())
    zero3 = processes > 1 or "zero3" in str(recipe.get("deepspeed", ""))
    shard = processes if zero3 else 1
    notes = []
    resident = {"policy weights": total * weight_bytes // shard}
    adapted: list[str] = []
    if recipe.get("use_peft"):
        trainable, adapted = lora_parameters(model, recipe)
        # PEFT keeps adapters in fp32 (autocast_adapter_dtype); AdamW: 2 fp32 moments; fp32 gradients
        resident["LoRA weights + gradients + AdamW state (fp32)"] = trainable * (4 + 4 + 8)
        if any("visual" in name for name in adapted):
            notes.append(f"LoRA targets also match {sum('visual' in n for n in adapted)} vision-tower linears")
        reference = 0  # the adapter-free model is the KL reference
    else:
        trainable = total
        per_param = (4 + 8 + 4) if zero3 else (weight_bytes + 2 * weight_bytes)  # DS: fp32 master+moments+grads
        resident["gradients + optimiser state"] = trainable * per_param // shard
        reference = total * weight_bytes // shard if recipe.get("beta", 0.0) > 0 else 0
    if reference:
        resident["reference model"] = reference
    s = shapes_of(config, recipe, adapted, image_size, answer_tokens)
    sam_source = recipe.get("sam_model", "facebook/sam2-hiera-large")
    sam = {} if sam_source == "grabcut" else sam2_terms(sam_config or load_config(sam_source),
                                                        s.generation_rows // max(recipe.get("num_generations", 8), 1))
    if sam:
        resident["SAM2 weights (fp32)"] = sam.pop("SAM2 weights (fp32)")
    gpu_bytes = int(gpu_gib * GIB)
    training = training_terms(s, act_bytes, device, bool(recipe.get("gradient_checkpointing")),
                              recipe.get("lora_dropout", 0.05) > 0)
    if recipe.get("use_vllm") and recipe.get("vllm_mode", "server") == "colocate":
        share = int(recipe.get("vllm_gpu_memory_utilization", 0.9) * gpu_bytes)
        generation = {"vLLM colocate (weights + KV cache + its activations)": share}
        if not recipe.get("vllm_enable_sleep_mode"):
            training["vLLM (awake: no sleep mode)"] = share
        vllm_weights = total * 2 // max(recipe.get("vllm_tensor_parallel_size", 1), 1)
        kv_needed = s.generation_rows * (s.stage2_prompt + s.completion) * s.kv_layers * 2 * s.kv_width * 2
        needed = vllm_weights + kv_needed + VLLM_WORKSPACE
        notes.append(f"vLLM: its weights {vllm_weights / GIB:.2f} GiB + the KV cache of one generation call "
                     f"{kv_needed / GIB:.2f} GiB + ~{VLLM_WORKSPACE / GIB:.0f} GiB workspace = {needed / GIB:.2f} GiB "
                     f"of its {share / GIB:.2f} GiB share" + ("" if share >= needed else
                                                             ": short, so it generates in waves (slower), or raise "
                                                             "vllm_gpu_memory_utilization"))
    else:
        generation = generation_terms(s, act_bytes)
    phases = {"generation": generation, "training": training}
    if sam:
        phases["reward"] = sam
    notes.append(f"sequence: {s.stage1_prompt} / {s.stage2_prompt} prompt tokens (stage 1 / 2; {s.image_tokens} per "
                 f"image) + {s.completion} completion; micro-batch {2 * s.micro_batch} sequences; "
                 f"{s.generation_rows} rows per generation call")
    return Plan(resident, phases, gpu_bytes, int(context_gib * GIB), notes)


def report(p: Plan) -> str:
    gib = lambda b: f"{b / GIB:6.2f} GiB"  # noqa: E731
    lines = ["resident:"] + [f"  {gib(v)}  {k}" for k, v in p.resident.items()]
    for name, phase in p.phases.items():
        lines.append(f"{name} (resident + its terms, only the largest transient (*) counted = "
                     f"{gib(p.phase_total(name))}):")
        lines += [f"  {gib(v)}  {k}{' *' if is_transient(k) else ''}"
                  for k, v in sorted(phase.items(), key=lambda kv: -kv[1])]
    lines.append("largest terms: " + "; ".join(f"{k} {v / GIB:.2f}" for k, v in p.largest(4)))
    device = p.peak + p.context_bytes
    verdict = "fits" if device <= p.gpu_bytes else "does NOT fit"
    lines.append(f"peak: {gib(p.peak)} allocated ({p.peak_phase}), {gib(device)} on the device with the CUDA "
                 f"context: {verdict} in {p.gpu_bytes / GIB:.0f} GiB ({(p.gpu_bytes - device) / GIB:+.2f} GiB)")
    lines += [f"note: {n}" for n in p.notes]
    return "\n".join(lines)


def parse_value(key: str, text: str):
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SystemExit(f"--set {key}: not a YAML value ({str(err).splitlines()[0]})") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="a training recipe (YAML)")
    parser.add_argument("--gpu-gib", type=float, default=24.0, help="memory of the card (GiB)")
    parser.add_argument("--processes", type=int, default=1, help="processes (GPUs) of a ZeRO-3 run")
    parser.add_argument("--image-size", type=int, nargs=2, default=list(DEFAULT_IMAGE), metavar=("W", "H"))
    parser.add_argument("--answer-tokens", type=int, default=64,
                        help="tokens of the stage-1 answer quoted in the stage-2 prompt (3-4 boxes: ~64)")
    parser.add_argument("--context-gib", type=float, default=0.5, help="CUDA context and allocator slack (GiB)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    args = parser.parse_args(argv)
    recipe = yaml.safe_load(Path(args.config).read_text()) or {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE")
        recipe[key] = parse_value(key, value)
    p = plan(recipe, args.gpu_gib, args.processes, tuple(args.image_size), args.answer_tokens, args.context_gib)
    print(f"{args.config}: {recipe.get('model_name_or_path')} + {recipe.get('sam_model')}, "
          f"{'LoRA r ' + str(recipe.get('lora_r')) if recipe.get('use_peft') else 'full fine-tune'}, "
          f"{'vLLM colocate' if recipe.get('use_vllm') else 'HF generation'}")
    print(report(p))
    return 0 if p.peak + p.context_bytes <= p.gpu_bytes else 1


if __name__ == "__main__":
    raise SystemExit(main())
