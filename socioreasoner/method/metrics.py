"""Segmentation metrics: per-sample IoU, gIoU (mean IoU), cIoU (Σ intersection / Σ union) and instance F1
(`instances`: components matched at IoU > 0.5, over the summed counts).

Peers disagree on a sample whose prediction and ground truth are both empty: LISA and the
reference evaluation count it as IoU 1, Seg-Zero and the reference *reward* as 0. Here it is
the `empty_rule` parameter ("one" or "zero", default "one" like the reference evaluation) and
every report states it. cIoU is unaffected by such samples (they add 0 to both sums) unless
every sample is empty, in which case the rule decides.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np

from socioreasoner.method.instances import f1_from_counts, instance_counts

EMPTY_RULES = {"one": 1.0, "zero": 0.0}


def check_empty_rule(rule: str) -> float:
    if rule not in EMPTY_RULES:
        raise ValueError(f"empty_rule must be one of {sorted(EMPTY_RULES)}, got {rule!r}")
    return EMPTY_RULES[rule]


def intersection_union(pred, gt) -> tuple[int, int]:
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"mask shapes differ: predicted {pred.shape}, ground truth {gt.shape}")
    return int(np.logical_and(pred, gt).sum()), int(np.logical_or(pred, gt).sum())


def iou_from_counts(intersection: int, union: int, empty_rule: str = "one") -> float:
    return intersection / union if union else check_empty_rule(empty_rule)


def mask_iou(pred, gt, empty_rule: str = "one") -> float:
    return iou_from_counts(*intersection_union(pred, gt), empty_rule=empty_rule)


def giou(ious) -> float:
    ious = list(ious)
    return float(np.mean(ious)) if ious else float("nan")


def ciou(intersections, unions, empty_rule: str = "one") -> float:
    intersections, unions = list(intersections), list(unions)
    if not unions:
        return float("nan")
    total_u = sum(unions)
    return sum(intersections) / total_u if total_u else check_empty_rule(empty_rule)


@dataclass
class _Counts:
    inter: list = field(default_factory=list)
    union: list = field(default_factory=list)
    instances: list = field(default_factory=list)  # (TP, FP, FN) per sample; None where not counted


class MetricAccumulator:
    """Collects per-sample counts for the final and stage-1 masks; reports overall and per level."""

    def __init__(self, empty_rule: str = "one"):
        check_empty_rule(empty_rule)
        self.empty_rule = empty_rule
        self._stages: dict[str, dict[str, _Counts]] = defaultdict(lambda: defaultdict(_Counts))

    def add_counts(self, level: str | None, stage: str, intersection: int, union: int,
                   instances: tuple[int, int, int] | None = None) -> None:
        for key in ("overall", level) if level else ("overall",):
            counts = self._stages[stage][key]
            counts.inter.append(intersection)
            counts.union.append(union)
            counts.instances.append(None if instances is None else tuple(instances))

    def add(self, final_mask, gt_mask, level: str | None = None, stage1_mask=None) -> dict:
        """Add one sample; returns its IoUs (`iou`, and `stage1_iou` when given)."""
        result = {}
        for stage, mask in (("final", final_mask), ("stage1", stage1_mask)):
            if mask is None:
                continue
            inter, union = intersection_union(mask, gt_mask)
            self.add_counts(level, stage, inter, union, instance_counts(mask, gt_mask))
            result["iou" if stage == "final" else "stage1_iou"] = iou_from_counts(inter, union, self.empty_rule)
        return result

    def _report(self, counts: _Counts) -> dict:
        ious = [iou_from_counts(i, u, self.empty_rule) for i, u in zip(counts.inter, counts.union)]
        report = {"giou": giou(ious), "ciou": ciou(counts.inter, counts.union, self.empty_rule), "n": len(ious)}
        # instance F1 over the summed counts; None when a sample was not counted (a journal from before F1)
        if all(c is not None for c in counts.instances):
            tp, fp, fn = (sum(c[i] for c in counts.instances) for i in range(3))
            report["f1"] = f1_from_counts(tp, fp, fn, check_empty_rule(self.empty_rule))
        else:
            report["f1"] = None
        return report

    def summary(self) -> dict:
        """{"empty_rule", "final": {"overall": {...}, "name": {...}, ...}, "stage1": {...}}."""
        report = {"empty_rule": self.empty_rule}
        for stage, groups in self._stages.items():
            report[stage] = {key: self._report(counts) for key, counts in sorted(groups.items())}
        return report
