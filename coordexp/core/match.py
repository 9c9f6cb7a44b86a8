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
    """The matching knobs of ``rollout_matching``; ``coordexp.bind.bind_match`` builds it, defaults live in the schema."""

    candidate_top_k: int = attrs.field(validator=_at_least(1, "candidate_top_k"))
    maskiou_gate: float = attrs.field(validator=_check_gate)
    iou_mode: IouMode = attrs.field(converter=IouMode)
    maskiou_resolution: int = attrs.field(validator=_at_least(1, "maskiou_resolution"))
    fp_cost: float = attrs.field(validator=_at_least(0.0, "fp_cost"))
    fn_cost: float = attrs.field(validator=_at_least(0.0, "fn_cost"))


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
    if not n_pred or not n_gt:
        return _unmatched(n_pred, n_gt)
    boxes_p, boxes_g = aabb_array(preds), aabb_array(gts)
    overlap = box_iou(boxes_p[:, None, :], boxes_g[None, :, :])  # AABB IoU, (P, G)
    pi, gi, fallbacks = _candidates(overlap, boxes_p, boxes_g, int(cfg.candidate_top_k))
    scored = pair_ious(
        preds, gts, pi, gi, mode=cfg.iou_mode, resolution=int(cfg.maskiou_resolution), aabb_iou=overlap
    )
    feasible = scored.ious >= cfg.maskiou_gate
    fp_, fg, fv = pi[feasible].tolist(), gi[feasible].tolist(), scored.ious[feasible].tolist()
    edges = {(p, g): v for p, g, v in zip(fp_, fg, fv)}
    assignment = _assign(edges, n_pred, n_gt, cfg)
    pairs = tuple((p, g) for p, g in enumerate(assignment) if g is not None)
    matched_ious = tuple(edges[pair] for pair in pairs)
    matched_gts = {g for _, g in pairs}
    return MatchResult(
        matched_pairs=pairs,
        matched_ious=matched_ious,
        fp_pred_indices=tuple(p for p, g in enumerate(assignment) if g is None),
        fn_gt_indices=tuple(g for g in range(n_gt) if g not in matched_gts),
        gating_rejections=len(pi) - len(edges),
        candidate_pairs_evaluated=len(pi),
        center_fallback_preds=fallbacks,
        repaired_polygons=scored.repaired_polygons,
        matched_iou_sum=float(sum(matched_ious)),
        matched_iou_count=len(pairs),
    )


def _unmatched(n_pred: int, n_gt: int) -> MatchResult:
    """One side empty: every prediction is FP, every GT is FN, nothing was evaluated."""
    return MatchResult((), (), tuple(range(n_pred)), tuple(range(n_gt)), 0, 0, 0, 0, 0.0, 0)


def _candidates(
    overlap: np.ndarray, boxes_p: np.ndarray, boxes_g: np.ndarray, top_k: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Candidate (pred, gt) index arrays, pred-major, and the number of centre-distance fallbacks."""
    n_pred, n_gt = overlap.shape
    fallback = overlap.max(axis=1) <= 0
    if top_k >= n_gt:  # every GT is a candidate whichever ranking applies; the pair order does not matter
        return np.repeat(np.arange(n_pred), n_gt), np.tile(np.arange(n_gt), n_pred), int(fallback.sum())
    key = -overlap
    if fallback.any():
        key = np.where(fallback[:, None], center_dist2_matrix(boxes_p, boxes_g), key)
    # A stable sort keeps ties in GT index order.
    order = np.argsort(key, axis=1, kind="stable")[:, :top_k]
    pi = np.repeat(np.arange(n_pred), order.shape[1])
    return pi, order.ravel().astype(np.int64), int(fallback.sum())


def _components(edges: dict[tuple[int, int], float], n_pred: int) -> list[tuple[list[int], list[int]]]:
    """Connected components of the feasible-pair graph (preds and GTs with an edge), by union-find.

    Plain Python: a sample has tens of feasible pairs, where building a scipy sparse graph cost more
    than the whole match of a small sample.
    """
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        root = x
        while parent.setdefault(root, root) != root:
            root = parent[root]
        while parent[x] != root:
            parent[x], x = root, parent[x]
        return root

    for p, g in edges:
        a, b = find(p), find(n_pred + g)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, tuple[list[int], list[int]]] = {}
    for node in sorted(parent):
        preds, gts = groups.setdefault(find(node), ([], []))
        (preds if node < n_pred else gts).append(node if node < n_pred else node - n_pred)
    return list(groups.values())


def _assign(edges: dict[tuple[int, int], float], n_pred: int, n_gt: int, cfg: MatchConfig) -> list[int | None]:
    """GT index (or None) per prediction; ``edges`` maps each feasible (pred, gt) pair to its IoU."""
    result: list[int | None] = [None] * n_pred
    if not edges:
        return result
    fp, fn = round(cfg.fp_cost * COST_SCALE), round(cfg.fn_cost * COST_SCALE)
    if (n_pred + n_gt) * (fp + fn + COST_SCALE) >= _MAX_EXACT:
        raise ConfigError(
            f"rollout_matching.fp_cost/fn_cost ({cfg.fp_cost}, {cfg.fn_cost}) are too large for exact "
            f"assignment of {n_pred} preds x {n_gt} GTs; use costs of order 1"
        )
    cost = {pair: round((1.0 - v) * COST_SCALE) for pair, v in edges.items()}  # round: half to even, as rint
    for comp_preds, comp_gts in _components(edges, n_pred):
        if len(comp_preds) == 1 and len(comp_gts) == 1:
            # The common case in a sparse scene: one pred, one GT, nothing to tie-break against.
            # Matching costs the pair, not matching costs fp + fn; equal costs match (tie rule).
            p, g = comp_preds[0], comp_gts[0]
            if cost[p, g] <= fp + fn:
                result[p] = g
            continue
        feasible = np.array([[(p, g) in cost for g in comp_gts] for p in comp_preds])
        pair_cost = np.array([[cost.get((p, g), 0) for g in comp_gts] for p in comp_preds], dtype=np.int64)
        for r, c in enumerate(_Component(pair_cost, feasible, cfg).canonical()):
            if c is not None:
                result[comp_preds[r]] = comp_gts[c]
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
