"""Match: assign rollout predictions to GT objects (Hungarian with dummy rows and columns).

Steps (reference 5.2-5.5):

1. Candidates. Each prediction keeps its ``k = candidate_top_k`` GTs of highest AABB IoU (ties: lower
   GT index first). When no AABB overlaps at all it keeps the ``k`` GTs whose centres are nearest
   instead (same tie rule); such predictions are counted in ``center_fallback_preds``.
2. IoU only for candidate pairs (exact by default, or raster), see ``coordexp.core.geometry``.
3. Gate. A candidate pair with IoU below ``maskiou_gate`` is infeasible and counted in
   ``gating_rejections`` (IoU equal to the gate passes). Feasible pairs cost ``1 - IoU``.
4. Assignment on the square matrix of size P+G: real pairs top-left, ``fp_cost`` for a prediction
   left unmatched, ``fn_cost`` for a GT left unmatched, 0 for dummy/dummy. An infeasible pair costs
   ``fp_cost + fn_cost + 1``: finite, yet never optimal, since sending both ends to dummies is cheaper.

Tie-breaking (deterministic, independent of the solver's internals). Costs are compared in integer
units of ``2**-30`` (so IoUs that differ by less than about 1e-9 tie, and sums are exact in float64).
Among all minimum-cost assignments the result is the lexicographically smallest one when predictions
are read in appearance order and each prediction's choices are ranked "GT index ascending, then
unmatched": prediction 0 takes the lowest-index GT that some optimal assignment gives it, then
prediction 1 likewise given that choice, and so on. Two identical predictions on two identical GTs
therefore pair up as (0, 0), (1, 1). It is computed by re-solving with one choice forced and keeping
it when the optimum is unchanged; the problem is first split into connected components of the
feasible-pair graph so that those re-solves stay small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import attrs
import numpy as np

from coordexp.core.geometry import IouMode, Shape, aabb_array, box_iou, center_dist2_matrix, pair_ious
from coordexp.errors import ConfigError

COST_SCALE = 2**30  # integer cost units per 1.0 of cost
_MAX_EXACT = 2**52  # float64 adds integers exactly below this


def _at_least(low: float, key: str):
    def check(instance: object, attribute: attrs.Attribute, value: float) -> None:
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= low):
            raise ConfigError(f"rollout_matching.{key} must be a finite number >= {low}, got {value!r}")

    return check


def _check_gate(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):
        raise ConfigError(f"rollout_matching.maskiou_gate must be in [0, 1], got {value!r}")


@attrs.frozen
class MatchConfig:
    """The matching knobs of ``rollout_matching`` (the config schema builds this record)."""

    candidate_top_k: int = attrs.field(default=10, validator=_at_least(1, "candidate_top_k"))
    maskiou_gate: float = attrs.field(default=0.3, validator=_check_gate)
    iou_mode: IouMode = attrs.field(default=IouMode.EXACT, converter=IouMode)
    maskiou_resolution: int = attrs.field(default=256, validator=_at_least(1, "maskiou_resolution"))
    fp_cost: float = attrs.field(default=1.0, validator=_at_least(0.0, "fp_cost"))
    fn_cost: float = attrs.field(default=1.0, validator=_at_least(0.0, "fn_cost"))


@attrs.frozen
class MatchResult:
    """Outcome of one sample's matching; indices are positions in the preds / GT sequences."""

    matched_pairs: tuple[tuple[int, int], ...]  # (pred idx, gt idx), ascending pred idx
    matched_ious: tuple[float, ...]  # IoU of each matched pair, same order
    fp_pred_indices: tuple[int, ...]  # ascending
    fn_gt_indices: tuple[int, ...]  # ascending
    gating_rejections: int  # candidate pairs below the gate
    candidate_pairs_evaluated: int  # pairs whose IoU was computed
    center_fallback_preds: int  # preds whose candidates came from centre distance
    repaired_polygons: int  # invalid polygons that shapely had to repair (exact mode)
    matched_iou_sum: float
    matched_iou_count: int


def match(preds: Sequence[Shape], gts: Sequence[Shape], *, cfg: MatchConfig) -> MatchResult:
    """Match predictions (appearance order) to GT objects (GT index order); see the module docstring."""
    n_pred, n_gt = len(preds), len(gts)
    pi, gi, fallbacks = _candidates(preds, gts, int(cfg.candidate_top_k))
    scored = pair_ious(preds, gts, pi, gi, mode=cfg.iou_mode, resolution=int(cfg.maskiou_resolution))
    feasible = scored.ious >= cfg.maskiou_gate
    ious = np.full((n_pred, n_gt), np.nan)
    ious[pi[feasible], gi[feasible]] = scored.ious[feasible]
    assignment = _assign(ious, cfg)
    pairs = tuple((p, g) for p, g in enumerate(assignment) if g is not None)
    matched_ious = tuple(float(ious[p, g]) for p, g in pairs)
    matched_gts = {g for _, g in pairs}
    return MatchResult(
        matched_pairs=pairs,
        matched_ious=matched_ious,
        fp_pred_indices=tuple(p for p, g in enumerate(assignment) if g is None),
        fn_gt_indices=tuple(g for g in range(n_gt) if g not in matched_gts),
        gating_rejections=int(np.count_nonzero(~feasible)),
        candidate_pairs_evaluated=len(pi),
        center_fallback_preds=fallbacks,
        repaired_polygons=scored.repaired_polygons,
        matched_iou_sum=float(sum(matched_ious)),
        matched_iou_count=len(pairs),
    )


def _candidates(
    preds: Sequence[Shape], gts: Sequence[Shape], top_k: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate (pred, gt) index arrays, pred-major, and the number of centre-distance fallbacks."""
    if not preds or not gts:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, 0
    boxes_p, boxes_g = aabb_array(preds), aabb_array(gts)
    overlap = box_iou(boxes_p[:, None, :], boxes_g[None, :, :])
    dist = center_dist2_matrix(boxes_p, boxes_g)
    fallback = overlap.max(axis=1) <= 0
    # A stable sort keeps ties in GT index order.
    key = np.where(fallback[:, None], dist, -overlap)
    order = np.argsort(key, axis=1, kind="stable")[:, :top_k]
    pi = np.repeat(np.arange(len(preds)), order.shape[1])
    return pi, order.ravel().astype(np.int64), int(fallback.sum())


def _assign(ious: np.ndarray, cfg: MatchConfig) -> list[int | None]:
    """GT index (or None) per prediction; ``ious`` holds NaN where a pair is infeasible."""
    from scipy.sparse import coo_matrix  # lazy: keeps ``import coordexp.core.match`` fast
    from scipy.sparse.csgraph import connected_components

    n_pred, n_gt = ious.shape
    result: list[int | None] = [None] * n_pred
    if n_pred == 0 or n_gt == 0:
        return result
    feasible = ~np.isnan(ious)
    pair_cost = np.where(feasible, np.rint((1.0 - np.nan_to_num(ious)) * COST_SCALE), 0).astype(np.int64)
    rows, cols = np.nonzero(feasible)
    graph = coo_matrix((np.ones(len(rows)), (rows, n_pred + cols)), shape=(n_pred + n_gt,) * 2)
    _, label = connected_components(graph, directed=False)
    fp_fn = round(cfg.fp_cost * COST_SCALE) + round(cfg.fn_cost * COST_SCALE)
    if (n_pred + n_gt) * (fp_fn + COST_SCALE) >= _MAX_EXACT:
        raise ConfigError(
            f"rollout_matching.fp_cost/fn_cost ({cfg.fp_cost}, {cfg.fn_cost}) are too large for exact "
            f"assignment of {n_pred} preds x {n_gt} GTs; use costs of order 1"
        )
    for comp in np.unique(label[:n_pred][feasible.any(axis=1)]):
        comp_preds = np.flatnonzero(label[:n_pred] == comp)
        comp_gts = np.flatnonzero(label[n_pred:] == comp)
        if len(comp_preds) == 1 and len(comp_gts) == 1:
            # The common case in a sparse scene: one pred, one GT, nothing to tie-break against.
            # Matching costs the pair, not matching costs fp + fn; equal costs match (tie rule).
            p, g = int(comp_preds[0]), int(comp_gts[0])
            if pair_cost[p, g] <= fp_fn:
                result[p] = g
            continue
        sub = _Component(pair_cost[np.ix_(comp_preds, comp_gts)], feasible[np.ix_(comp_preds, comp_gts)], cfg)
        for r, c in enumerate(sub.canonical()):
            if c is not None:
                result[int(comp_preds[r])] = int(comp_gts[c])
    return result


class _Component:
    """One connected component's augmented cost matrix (integer units) and its canonical solve."""

    def __init__(self, pair_cost: np.ndarray, feasible: np.ndarray, cfg: MatchConfig) -> None:
        p, g = pair_cost.shape
        fp, fn = round(cfg.fp_cost * COST_SCALE), round(cfg.fn_cost * COST_SCALE)
        forbidden = fp + fn + COST_SCALE
        m = np.zeros((p + g, g + p), dtype=np.int64)  # rows: preds, gt dummies; cols: gts, pred dummies
        m[:p, :g] = np.where(feasible, pair_cost, forbidden)
        m[:p, g:] = fp
        m[p:, :g] = fn
        self.matrix, self.feasible, self.n_pred, self.n_gt = m, feasible, p, g

    def _solve(self, rows: list[int], cols: list[int]) -> tuple[int, dict[int, int]]:
        from scipy.optimize import linear_sum_assignment  # lazy, see _assign

        if not rows:
            return 0, {}
        sub = self.matrix[np.ix_(rows, cols)]
        r, c = linear_sum_assignment(sub.astype(np.float64))
        return int(sub[r, c].sum()), {rows[i]: cols[j] for i, j in zip(r, c)}

    def canonical(self) -> list[int | None]:
        """Per prediction row: GT column or None, by the module's lexicographic tie rule."""
        rows, cols = list(range(self.n_pred + self.n_gt)), list(range(self.n_gt + self.n_pred))
        best, current = self._solve(rows, cols)
        spent = 0
        choice: list[int | None] = []
        for r in range(self.n_pred):
            rows.remove(r)
            col, current = self._first_optimal_choice(r, rows, cols, current, best - spent)
            cols.remove(col)
            spent += int(self.matrix[r, col])
            choice.append(col if col < self.n_gt and self.feasible[r, col] else None)
        return choice

    def _first_optimal_choice(
        self, r: int, rows: list[int], cols: list[int], current: dict[int, int], budget: int
    ) -> tuple[int, dict[int, int]]:
        """Row r's most preferred column that still reaches the optimum, and an optimal rest.

        ``current`` is an optimal assignment consistent with the earlier rows' choices, so row r's
        column in it is always a valid answer; only the choices ranked before it need a re-solve.
        """
        now = current[r]
        ranked = [int(c) for c in np.flatnonzero(self.feasible[r]) if c in cols]
        preferred = [c for c in ranked if c < now] if now < self.n_gt else ranked
        for col in preferred:
            total, rest = self._solve(rows, [c for c in cols if c != col])
            if int(self.matrix[r, col]) + total == budget:
                return col, rest
        return now, current
