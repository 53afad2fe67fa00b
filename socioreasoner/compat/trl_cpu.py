"""Make TRL's fused LM head cheap on CPU: score only the labelled tokens, in a few wide passes.

TRL 1.16 computes per-token log-probs (SFT loss, GRPO policy and reference passes) with a
chunked LM-head kernel. Two things make it slow on a CPU with Qwen's 151,936-row vocabulary:

1. On devices without Triton it scores *every* position, so that tile shapes stay static for
   graph compilers; the LM head over prompt tokens then dominates a tiny model's step.
   `_use_triton` only chooses that selection, so we make it answer "compact" on CPU too.
2. Its torch fallback folds each 32k-column tile with about a dozen elementwise passes, and
   recomputes every tile in backward. We replace the kernel, on CPU only, by `VocabLogProb`:
   the same outputs and gradients from one `log_softmax` over the labelled rows, whose
   probabilities it keeps for backward (up to 2 GiB; larger calls keep TRL's kernel).

A third patch, for multi-process CPU runs (torch 2.13 / transformers 5.17): with more than one
process `Trainer` loads a checkpoint's optimiser state with `map_location=args.device`, which on
CPU is `cpu:<rank>`, and torch's loader knows the location "cpu" but not "cpu:N" ("don't know
how to restore data location"), so a two-process CPU run could not resume.
`load_cpu_index_locations` registers a deserializer for "cpu:N" (through torch's public
`torch.serialization.register_package`) that keeps such storages on the CPU.

The LM-head patches compute what TRL computes (tests compare outputs and gradients with TRL's kernel
to float32 rounding); CUDA/XPU devices keep TRL's Triton path untouched.
"""

from __future__ import annotations

import logging

import torch
import trl.trainer.utils as trl_utils

logger = logging.getLogger(__name__)

# Probabilities kept for backward: 2 GiB in fp32 (the call's peak is about three times that);
# larger calls go to TRL's kernel, which recomputes them tile by tile.
MAX_SAVED_PROBS = 2**29
# The optional per-token outputs TRL's kernel knows (its default `outputs` argument)
OPTIONAL_OUTPUTS = ("entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


class VocabLogProb(torch.autograd.Function):
    """Drop-in for `trl.kernels.ChunkedLogProbFunction` (same arguments and outputs) without softcapping.

    Returns (log p(target), entropy, log Σp², mean logit, target is top-1), the optional ones
    `None` unless named in `outputs`; only the first two carry gradients. It keeps the
    [tokens, vocab] probabilities for backward instead of recomputing them, which is what makes
    it cheap; `_CpuKernel` only sends it calls whose probabilities fit `MAX_SAVED_PROBS`.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
                logit_scale=1.0, outputs=OPTIONAL_OUTPUTS):
        if final_logit_softcapping is not None:
            raise ValueError("VocabLogProb does not implement logit softcapping; use TRL's kernel")
        ctx.set_materialize_grads(False)
        scale = logit_scale / temperature
        z = torch.nn.functional.linear(hidden.float(), weight.float(), None if bias is None else bias.float())
        if scale != 1.0:
            z.mul_(scale)
        mean_logits = z.mean(-1) if "mean_logits" in outputs else None
        # One max pass gives both the softmax shift and the top-1 (the first maximum, like TRL's argmax); the
        # probabilities come from one exp of the shifted logits, normalised in place. Each pass over [tokens, vocab]
        # is memory-bound on CPU: this is 9 passes where logsumexp + argmax + a second exp made 13.
        top, top_index = z.max(-1, keepdim=True)
        is_top1 = top_index.squeeze(-1) == targets if "is_top1" in outputs else None
        shifted = z.sub_(top)  # in place: the logits are not needed any more
        p = shifted.exp()
        total = p.sum(-1, keepdim=True)
        p.div_(total)
        log_total = total.log()
        log_probs = (shifted.gather(-1, targets.unsqueeze(-1)) - log_total).squeeze(-1)
        # H = -sum p log p = log(total) - sum p * shifted, since log p = shifted - log(total) and sum p = 1
        entropy = (log_total.squeeze(-1) - torch.einsum("nv,nv->n", p, shifted)) if "entropy" in outputs else None
        log_sum_sq_probs = torch.einsum("nv,nv->n", p, p).log() if "log_sum_sq_probs" in outputs else None
        ctx.save_for_backward(hidden, weight, bias, targets, p, entropy)
        ctx.scale = scale
        ctx.mark_non_differentiable(*(x for x in (log_sum_sq_probs, mean_logits, is_top1) if x is not None))
        return log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1

    @staticmethod
    def backward(ctx, grad_log_probs, grad_entropy, *_):
        hidden, weight, bias, targets, p, entropy = ctx.saved_tensors
        if grad_log_probs is not None:  # d log p_t / dz = onehot(t) - p
            g = grad_log_probs.float().unsqueeze(-1)
            grad = (p * g.neg()).scatter_add_(-1, targets.unsqueeze(-1), g)
        else:
            grad = torch.zeros_like(p)
        if grad_entropy is not None:  # d H / dz = -p (log p + H); xlogy keeps p = 0 at 0
            grad.sub_(grad_entropy.float().unsqueeze(-1) * (torch.xlogy(p, p) + p * entropy.unsqueeze(-1)))
        if ctx.scale != 1.0:
            grad.mul_(ctx.scale)
        need_hidden, need_weight, need_bias = ctx.needs_input_grad[:3]
        grad_hidden = (grad @ weight.float()).to(hidden.dtype) if need_hidden else None
        grad_weight = (grad.t() @ hidden.float()).to(weight.dtype) if need_weight else None
        grad_bias = grad.sum(0).to(bias.dtype) if need_bias else None
        return grad_hidden, grad_weight, grad_bias, None, None, None, None, None, None


class _CpuKernel:
    """What `trl.trainer.utils` calls as its kernel: `VocabLogProb` for CPU tensors, TRL's own otherwise."""

    _socioreasoner_patch = True

    def __init__(self, kernel):
        self.kernel = kernel

    def apply(self, hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping=None,
              logit_scale=1.0, outputs=OPTIONAL_OUTPUTS):
        function = self.kernel
        fits = hidden.shape[0] * weight.shape[0] <= MAX_SAVED_PROBS
        if hidden.device.type == "cpu" and final_logit_softcapping is None and fits:
            function = VocabLogProb
        return function.apply(hidden, weight, bias, targets, temperature, chunk_size, final_logit_softcapping,
                              logit_scale, outputs)


def compact_scoring_on_cpu() -> bool:
    """Idempotently patch TRL's fused LM head for CPU (see the module docstring); False if TRL changed."""
    selector, kernel = getattr(trl_utils, "_use_triton", None), getattr(trl_utils, "_ChunkedLogProbFunction", None)
    if not callable(selector) or kernel is None:
        logger.warning("TRL has no _use_triton/_ChunkedLogProbFunction; CPU steps use TRL's slower scoring (same result)")
        return False
    if not getattr(selector, "_socioreasoner_patch", False):
        def use_compact(device):
            return device.type == "cpu" or selector(device)

        use_compact._socioreasoner_patch = True
        trl_utils._use_triton = use_compact
    if not getattr(kernel, "_socioreasoner_patch", False):
        trl_utils._ChunkedLogProbFunction = _CpuKernel(kernel)
    return True


def _cpu_index_deserialize(storage, location: str):
    if location.startswith("cpu:") and location[4:].isdigit():
        return storage  # already a CPU storage
    return None  # not ours: torch tries its other locations


def _no_tag(storage):
    return None  # saving keeps torch's own "cpu" tag


_cpu_index_deserialize._socioreasoner_patch = True


def load_cpu_index_locations() -> None:
    """Idempotently let `torch.load(map_location="cpu:N")` restore CPU storages (module docstring)."""
    from torch import serialization

    registered = getattr(serialization, "_package_registry", [])
    if any(getattr(entry[2], "_socioreasoner_patch", False) for entry in registered if len(entry) > 2):
        return
    serialization.register_package(99, _no_tag, _cpu_index_deserialize)
