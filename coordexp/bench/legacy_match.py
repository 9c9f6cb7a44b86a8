"""The legacy matcher, written from reference rollout 5.2-5.5, for side-by-side timing only.

Per prediction: AABB IoU against every GT in a Python loop, sort, keep top-k (centre-distance fallback
when nothing overlaps); per candidate pair: rasterise both polygons with pycocotools
(``frPyObjects`` + ``merge``, again for every pair) and take the RLE IoU; then one
``linear_sum_assignment`` on the dense ``(P+G) x (P+G)`` matrix with 1e6 for infeasible pairs. Nothing
here is used by training: ``coordexp.core.match`` is the matcher.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Shape = tuple[str, tuple[int, ...]]  # (geom_type, norm1000 points)


def _outline(shape: Shape) -> list[int]:
    kind, p = shape
    if kind == "bbox_2d":
        x1, y1, x2, y2 = min(p[0], p[2]), min(p[1], p[3]), max(p[0], p[2]), max(p[1], p[3])
        return [x1, y1, x2, y1, x2, y2, x1, y2]
    return list(p)


def _aabb(outline: list[int]) -> tuple[int, int, int, int]:
    xs, ys = outline[0::2], outline[1::2]
    return min(xs), min(ys), max(xs), max(ys)


def _box_iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    iw, ih = max(0, min(a[2], b[2]) - max(a[0], b[0])), max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _mask_iou(a: list[int], b: list[int], resolution: int) -> float:
    from pycocotools import mask as mask_utils

    scale = (resolution - 1) / 999
    pa = [min(999, max(0, v)) * scale for v in a]
    pb = [min(999, max(0, v)) * scale for v in b]
    ra = mask_utils.merge(mask_utils.frPyObjects([pa], resolution, resolution))
    rb = mask_utils.merge(mask_utils.frPyObjects([pb], resolution, resolution))
    return float(mask_utils.iou([ra], [rb], [0])[0][0])


def _candidates(box: tuple[int, ...], gt_boxes: list[tuple[int, ...]], top_k: int) -> list[int]:
    ranked = sorted(((_box_iou(box, g), j) for j, g in enumerate(gt_boxes)), key=lambda t: (-t[0], t[1]))
    if ranked and ranked[0][0] <= 0:
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        dist = [(((g[0] + g[2]) / 2 - cx) ** 2 + ((g[1] + g[3]) / 2 - cy) ** 2, j) for j, g in enumerate(gt_boxes)]
        return [j for _, j in sorted(dist)[:top_k]]
    return [j for _, j in ranked[:top_k]]


def legacy_match(
    preds: Sequence[Shape], gts: Sequence[Shape], *, top_k: int = 10, gate: float = 0.3, resolution: int = 256
) -> list[tuple[int, int]]:
    """Matched (pred, gt) pairs of the legacy algorithm (fp_cost = fn_cost = 1)."""
    from scipy.optimize import linear_sum_assignment

    n_pred, n_gt = len(preds), len(gts)
    outlines_p, outlines_g = [_outline(s) for s in preds], [_outline(s) for s in gts]
    gt_boxes = [_aabb(o) for o in outlines_g]
    cost = np.full((n_pred, n_gt), 1e6)
    for i, outline in enumerate(outlines_p):
        for j in _candidates(_aabb(outline), gt_boxes, max(1, top_k)):
            iou = _mask_iou(outline, outlines_g[j], resolution)
            if iou >= gate:
                cost[i, j] = 1.0 - iou
    size = n_pred + n_gt
    full = np.zeros((size, size))
    full[:n_pred, :n_gt] = cost
    full[:n_pred, n_gt:] = 1.0
    full[n_pred:, :n_gt] = 1.0
    rows, cols = linear_sum_assignment(full)
    return [(int(r), int(c)) for r, c in zip(rows, cols) if r < n_pred and c < n_gt and full[r, c] < 0.5e6]
