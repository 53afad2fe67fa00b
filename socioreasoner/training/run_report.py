"""A demo run's report: before/after metrics summarised per split, GRPO reward curves from TRL's log history
(`grpo_curves.png`), and the markdown report (`report.md`)."""

from __future__ import annotations

from pathlib import Path

REWARD_KEYS = ["stage1_format", "stage1_count", "stage1_box", "stage2_format", "stage2_points", "stage2_mask_iou"]


def summarise(metrics: dict) -> dict:
    """The numbers of one evaluation that the report compares."""
    final, stage1 = metrics["final"]["overall"], metrics["stage1"]["overall"]
    return {"giou": final["giou"], "ciou": final["ciou"], "stage1_giou": stage1["giou"], "stage1_ciou": stage1["ciou"],
            **{k: v for k, v in metrics["rewards"].items()}, "n": final["n"],
            "per_level_giou": {k: v["giou"] for k, v in metrics["final"].items() if k != "overall"}}


def grpo_curves(log_history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    logs = [h for h in log_history if "loss" in h]
    steps = [h["step"] for h in logs]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for key in REWARD_KEYS:
        axes[0].plot(steps, [h.get(f"rewards/{key}/mean", float("nan")) for h in logs], label=key)
    axes[0].set_title("reward components (mean per step)")
    for key, label in (("stage1/mask_iou", "stage-1 (box-only) mask IoU"), ("stage2/mask_iou", "final mask IoU")):
        axes[1].plot(steps, [h.get(key, float("nan")) for h in logs], label=label)
    axes[1].set_title("mask IoU on training rollouts")
    for ax in axes:
        ax.set_xlabel("GRPO step")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report_markdown(report: dict) -> str:
    before, after, cfg = report["before"], report["after"], report["settings"]
    rows = [("final gIoU", "giou"), ("final cIoU", "ciou"), ("stage-1 gIoU", "stage1_giou"),
            ("stage-1 cIoU", "stage1_ciou"), ("stage-1 format reward", "stage1_format"),
            ("stage-1 count reward", "stage1_count"), ("stage-1 box reward", "stage1_box"),
            ("stage-2 format reward", "stage2_format"), ("stage-2 points reward", "stage2_points")]
    lines = ["# socioreasoner demo: toy city, tiny models, CPU", "",
             f"Held-out toy val, {after['n']} samples; SFT warm start vs after {cfg['grpo_steps']} "
             f"GRPO steps. Wall time {report['wall_seconds']:.0f} s ("
             + ", ".join(f"{name} {value:.0f} s" for name, value in report.get("phase_seconds", {}).items())
             + f"). Segmenter: {report['segmenter']}.", "",
             f"Toy city: `{cfg['layout']}` layout" + (", the targets filled red on the map" if cfg["highlight"] else "")
             + (f", coordinate tint ±{cfg['tint']:g}" if cfg["tint"] else "") + f"; policy rope θ {cfg['rope_theta']:g}, "
             f"SFT {cfg['sft_steps']} stage-1 steps then {cfg['sft2_steps']} steps of both stages"
             + (", stage-2 drafts drawn with the segmenter's mask" if cfg.get("segmenter_drafts") else "")
             + " (docs/toy_learnability.md says why).", "",
             "| metric | after SFT (before GRPO) | after GRPO | change |", "|---|---|---|---|"]
    for label, key in rows:
        lines.append(f"| {label} | {before[key]:.3f} | {after[key]:.3f} | {after[key] - before[key]:+.3f} |")
    gap_before, gap_after = before["image_reliance"]["gap"], after["image_reliance"]["gap"]
    n_reliance = before["image_reliance"]["n"]
    lines.append(f"| image reliance (loss gap, shuffled − own images; {n_reliance} samples) | {gap_before:.4f} | "
                 f"{gap_after:.4f} | {gap_after - gap_before:+.4f} |")
    lines += ["", "Image reliance (`socioreasoner.diagnostics`): the stage-1 GT answer's loss with another "
              "sample's images minus with its own; about 0 means the policy does not use the images to place "
              "its boxes.", "", "Numbers come from `eval_before/` and `eval_after/` (`per_sample.csv`, `metrics.json`); IoU with "
              "`empty_rule=one`. Curves: `curves.png`. Prediction on one held-out pair: `predict/`."]
    return "\n".join(lines) + "\n"
