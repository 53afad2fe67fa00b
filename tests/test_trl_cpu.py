"""The CPU LM-head kernel is an exact rewrite of TRL's: same outputs, same gradients."""

import pytest
import torch
import trl.trainer.utils as trl_utils
from trl.kernels import ChunkedLogProbFunction
from trl.kernels.chunked_logprob import OPTIONAL_OUTPUTS

from socioreasoner.compat import trl_cpu
from socioreasoner.compat.trl_cpu import VocabLogProb, compact_scoring_on_cpu

OUTPUTS = OPTIONAL_OUTPUTS  # TRL's own list: a new output there shows up here


def _scores(function, n_rows, with_bias, temperature, logit_scale, seed=0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(n_rows, 16, generator=generator, requires_grad=True)
    weight = torch.randn(1000, 16, generator=generator).mul(0.5).requires_grad_()
    bias = torch.randn(1000, generator=generator).requires_grad_() if with_bias else None
    targets = torch.randint(0, 1000, (n_rows,), generator=generator)
    logits = hidden.detach()[:3] @ weight.detach().t() + (0 if bias is None else bias.detach())
    targets[:3] = logits.argmax(-1)  # some targets are the top-1
    out = function.apply(hidden, weight, bias, targets, temperature, 256, None, logit_scale, OUTPUTS)
    g_lp, g_ent = torch.randn(n_rows, generator=generator), torch.randn(n_rows, generator=generator)
    (out[0] * g_lp).sum().add((out[1] * g_ent).sum()).backward()
    grads = [hidden.grad, weight.grad] + ([bias.grad] if with_bias else [])
    return out, grads


@pytest.mark.parametrize("n_rows,with_bias,temperature,logit_scale", [
    (7, False, 1.0, 1.0), (300, True, 0.7, 1.3)])
def test_vocab_logprob_matches_trl_kernel(n_rows, with_bias, temperature, logit_scale):
    assert trl_cpu.OPTIONAL_OUTPUTS == OPTIONAL_OUTPUTS  # the defaults the kernel stands in for
    ours, our_grads = _scores(VocabLogProb, n_rows, with_bias, temperature, logit_scale)
    theirs, their_grads = _scores(ChunkedLogProbFunction, n_rows, with_bias, temperature, logit_scale)
    for a, b in zip(ours[:4], theirs[:4]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours[4], theirs[4]) and ours[4][:3].all()
    for a, b in zip(our_grads, their_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_vocab_logprob_handles_no_rows_and_optional_outputs():
    hidden = torch.zeros(0, 8, requires_grad=True)
    out = VocabLogProb.apply(hidden, torch.randn(50, 8), None, torch.zeros(0, dtype=torch.long), 1.0, 16, None, 1.0, ())
    assert out[0].shape == (0,) and all(x is None for x in out[1:])
    out[0].sum().backward()
    assert hidden.grad.shape == (0, 8)
    with pytest.raises(ValueError, match="softcapping"):
        VocabLogProb.apply(hidden, torch.randn(50, 8), None, torch.zeros(0, dtype=torch.long), 1.0, 16, 30.0, 1.0, ())


def test_patch_routes_cpu_to_vocab_logprob_and_is_idempotent(monkeypatch):
    assert compact_scoring_on_cpu() and compact_scoring_on_cpu()
    kernel = trl_utils._ChunkedLogProbFunction
    assert kernel.kernel is ChunkedLogProbFunction  # wrapped once, not twice
    assert trl_utils._use_triton(torch.device("cpu"))
    calls = []
    original = VocabLogProb.apply
    monkeypatch.setattr(VocabLogProb, "apply", lambda *args: calls.append(args) or original(*args))
    args = (torch.randn(4, 8), torch.randn(30, 8), None, torch.zeros(4, dtype=torch.long), 1.0, 16)
    ours = kernel.apply(*args)
    assert len(calls) == 1
    monkeypatch.setattr(trl_cpu, "MAX_SAVED_PROBS", 4 * 30 - 1)  # too many probabilities to keep: TRL's kernel
    theirs = kernel.apply(*args)
    assert len(calls) == 1
    torch.testing.assert_close(ours[0], theirs[0])


def test_checkpoints_load_onto_an_indexed_cpu_device():
    """Trainer loads optimiser state with map_location=args.device, `cpu:<rank>` in a multi-process CPU run;
    torch 2.13 cannot restore that location by itself (the test of the patch's need is the first assertion)."""
    import io

    from torch import serialization

    from socioreasoner.compat.trl_cpu import load_cpu_index_locations

    buffer = io.BytesIO()
    torch.save({"exp_avg": torch.arange(3.0)}, buffer)
    patched = [e for e in serialization._package_registry if getattr(e[2], "_socioreasoner_patch", False)]
    if not patched:  # in a fresh process, before any trainer was built
        buffer.seek(0)
        with pytest.raises(RuntimeError, match="restore data location"):
            torch.load(buffer, map_location=torch.device("cpu", 1), weights_only=True)
    load_cpu_index_locations()
    load_cpu_index_locations()  # idempotent
    assert len([e for e in serialization._package_registry if getattr(e[2], "_socioreasoner_patch", False)]) == 1
    buffer.seek(0)
    loaded = torch.load(buffer, map_location=torch.device("cpu", 1), weights_only=True)
    assert torch.equal(loaded["exp_avg"], torch.arange(3.0))
