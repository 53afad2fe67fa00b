"""Instance-level F1, the paper's third metric.

The paper reports F1 "at the instance level" without defining it, and the reference code has none
(SPEC, *Published numbers*), so this is ours, stated here and in docs/evaluation.md: the matching rule of
object detection benchmarks (PASCAL VOC, Everingham et al., IJCV 2010: a detection is correct when its overlap
with a ground-truth object, intersection over union, exceeds 50 %; each object is matched once) applied to
mask instances.

- Instances are the 8-connected components of a mask: the ground truth's (an entity of several parcels has
  several) and the prediction's.
- A predicted instance and a ground-truth instance match when their IoU exceeds 0.5. Components of one mask are
  disjoint, so an instance has at most one such partner (covering more than half of the union needs more than
  half of each), and the matching needs no assignment step: TP = the number of such pairs.
- FP = predicted instances unmatched, FN = ground-truth instances unmatched; F1 = 2·TP / (2·TP + FP + FN) over
  the split's summed counts (micro), per task level and overall. A split with no instance at all scores the
  empty rule's value, as IoU does for an empty prediction of an empty target.

Linear in the pixels: the overlaps come from one pass over the pixels both masks cover.
"""

from __future__ import annotations

import numpy as np

MATCH_IOU = 0.5
EIGHT_CONNECTED = np.ones((3, 3), bool)


def instance_counts(pred, gt) -> tuple[int, int, int]:
    """(TP, FP, FN) of the predicted mask's instances against the ground truth's (module docstring)."""
    from scipy import ndimage

    pred_labels, num_pred = ndimage.label(np.asarray(pred, bool), EIGHT_CONNECTED)
    gt_labels, num_gt = ndimage.label(np.asarray(gt, bool), EIGHT_CONNECTED)
    if num_pred == 0 or num_gt == 0:
        return 0, num_pred, num_gt
    pred_area = np.bincount(pred_labels.ravel(), minlength=num_pred + 1)
    gt_area = np.bincount(gt_labels.ravel(), minlength=num_gt + 1)
    both = (pred_labels > 0) & (gt_labels > 0)
    pairs, intersection = np.unique(pred_labels[both].astype(np.int64) * (num_gt + 1) + gt_labels[both],
                                    return_counts=True)
    union = pred_area[pairs // (num_gt + 1)] + gt_area[pairs % (num_gt + 1)] - intersection
    tp = int(np.count_nonzero(intersection > MATCH_IOU * union))
    return tp, num_pred - tp, num_gt - tp


def f1_from_counts(tp: int, fp: int, fn: int, empty_value: float = 1.0) -> float:
    """2·TP / (2·TP + FP + FN); `empty_value` when there is no instance on either side."""
    denominator = 2 * tp + fp + fn
    return 2 * tp / denominator if denominator else empty_value
