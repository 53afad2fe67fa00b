"""TRL's chunked LM-head kernel vs `socioreasoner.compat.trl_cpu.VocabLogProb` on CPU (same inputs, same run).

    python benchmarks/lm_head_cpu.py                 # Qwen's 151,936-row vocabulary, hidden 64 (the tiny policy)
    python benchmarks/lm_head_cpu.py --rows 768 --hidden 64

Times forward + backward of the per-token log-probs (and the outputs SFT asks for: entropy
and top-1) for `--rows` labelled tokens, and prints both times, their ratio, and the largest
difference in log-probs and gradients.
"""

from __future__ import annotations

import argparse
import time

import torch
from trl.kernels import ChunkedLogProbFunction

from socioreasoner.compat.trl_cpu import VocabLogProb

OUTPUTS = ("entropy", "is_top1")


def run(function, hidden, weight, targets, repeats: int):
    times = []
    for _ in range(repeats + 1):  # the first call warms up
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        start = time.perf_counter()
        log_probs = function.apply(h, w, None, targets, 1.0, 32768, None, 1.0, OUTPUTS)[0]
        (-log_probs.sum()).backward()
        times.append(time.perf_counter() - start)
    return sum(times[1:]) / repeats, log_probs.detach(), h.grad, w.grad


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=300, help="labelled tokens per call (demo SFT step: ~300)")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.rows, args.hidden, generator=generator)
    weight = torch.randn(args.vocab, args.hidden, generator=generator) * 0.02
    targets = torch.randint(0, args.vocab, (args.rows,), generator=generator)
    trl_s, trl_lp, trl_gh, trl_gw = run(ChunkedLogProbFunction, hidden, weight, targets, args.repeats)
    ours_s, our_lp, our_gh, our_gw = run(VocabLogProb, hidden, weight, targets, args.repeats)
    print(f"rows {args.rows}, hidden {args.hidden}, vocab {args.vocab}, {torch.get_num_threads()} threads")
    print(f"TRL chunked kernel  {trl_s * 1000:8.1f} ms per forward + backward")
    print(f"VocabLogProb        {ours_s * 1000:8.1f} ms per forward + backward")
    print(f"speed-up            {trl_s / ours_s:8.2f}x")
    diffs = [(a - b).abs().max().item() for a, b in ((trl_lp, our_lp), (trl_gh, our_gh), (trl_gw, our_gw))]
    print("max |difference|    log-probs {:.2e}, grad hidden {:.2e}, grad weight {:.2e}".format(*diffs))


if __name__ == "__main__":
    main()
