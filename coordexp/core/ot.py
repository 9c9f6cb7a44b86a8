"""Entropic optimal transport (Sinkhorn) for polygon self-context targets.

When a matched pair involves a polygon, the predicted coord slots and the GT vertices are two point
sets of different sizes with no natural one-to-one order. The legacy trainer (reference rollout §6.1)
solves an entropic OT problem between them and moves every predicted point to the barycentre of the
GT points it is transported to. Those barycentres become the coord targets of the predicted slots.
The numbers here follow that recipe exactly (uniform marginals, kernel clamp, non-positive
denominators replaced by 1), so targets match the legacy ones; its known bias (targets shrink toward
the GT centroid for large epsilon, reference 15.1 W17) is kept and documented, not silently changed.

Pure numpy, no gradient: targets are constants for the loss.
"""

from __future__ import annotations

import math

import numpy as np

from coordexp.errors import ConfigError

OT_COSTS = ("l1", "l2")
_KERNEL_CLAMP = 50.0


def check_ot_params(cost: str, epsilon: float, iters: int) -> None:
    """Raise ConfigError for settings the legacy code silently replaced (eps <= 0 became 1.0)."""
    if cost not in OT_COSTS:
        raise ConfigError(f"rollout_matching.ot_cost must be one of {list(OT_COSTS)}, got {cost!r}")
    if not (isinstance(epsilon, (int, float)) and math.isfinite(epsilon) and epsilon > 0):
        raise ConfigError(f"rollout_matching.ot_epsilon must be a finite number > 0, got {epsilon!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ConfigError(f"rollout_matching.ot_iters must be an integer >= 1, got {iters!r}")


def _cost_matrix(a: np.ndarray, b: np.ndarray, cost: str) -> np.ndarray:
    diff = a[:, None, :] - b[None, :, :]
    if cost == "l1":
        return np.abs(diff).sum(axis=-1)
    return np.sqrt((diff * diff).sum(axis=-1))


def _safe(den: np.ndarray) -> np.ndarray:
    # A kernel row can underflow to 0 for far-apart points; dividing by 1 keeps the plan finite.
    return np.where(den > 0, den, 1.0)


def barycentric_projection(
    pred: np.ndarray, gt: np.ndarray, *, cost: str = "l2", epsilon: float = 10.0, iters: int = 30
) -> np.ndarray:
    """Each predicted point moved to the barycentre of the GT points its Sinkhorn plan row sends it to.

    Args:
        pred: ``(N, 2)`` predicted points (norm1000 x, y).
        gt: ``(M, 2)`` GT points (norm1000 x, y).
        cost: ``"l1"`` or ``"l2"`` point distance.
        epsilon: entropic regularisation in norm1000 units.
        iters: Sinkhorn iterations (the production config used 3; the default is 30).

    Returns:
        ``(N, 2)`` float array. An empty point set returns ``pred`` unchanged (nothing to move to).
    """
    check_ot_params(cost, epsilon, iters)
    pred = np.asarray(pred, dtype=np.float64).reshape(-1, 2)
    gt = np.asarray(gt, dtype=np.float64).reshape(-1, 2)
    if len(pred) == 0 or len(gt) == 0:
        return pred.copy()
    kernel = np.exp(np.clip(-_cost_matrix(pred, gt, cost) / epsilon, -_KERNEL_CLAMP, _KERNEL_CLAMP))
    a = np.full(len(pred), 1.0 / len(pred))
    b = np.full(len(gt), 1.0 / len(gt))
    v = np.ones(len(gt))
    for _ in range(iters):
        u = a / _safe(kernel @ v)
        v = b / _safe(kernel.T @ u)
    plan = u[:, None] * kernel * v[None, :]
    rows = _safe(plan.sum(axis=1, keepdims=True))
    return (plan / rows) @ gt
