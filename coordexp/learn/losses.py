"""Stage-2 losses as pure tensor functions: token CE and the coord-slot loss (softCE + W1 + gate).

The AB geometry terms (expectation decode, SmoothL1, CIoU, coord regularizers) live in
``coordexp.learn.geometry_losses`` and are re-exported here, so callers import losses from one place.

Normalisation contract
----------------------
Every function returns *sums* and their *weights* (or per-item values), never a mean over one pack.
The legacy trainer averaged per pack, so a pack holding 50 tokens weighed as much as one holding
12,000, and packs, accumulation steps and ranks all skewed the objective (reference rollout 15.1 W18).
coordexp normalises once per optimizer step instead:

    loss/ce    = sum over every pack of the step of  sum_t w_t * ce_t
                 / (sum over the same packs of  sum_t w_t)
    loss/coord = sum over every pack of  sum_slots w_s * l_s
                 / (sum over the same packs of  sum_slots w_s)
    geometry   = sum over every pack of  sum_boxes sum_t weight_t * term_t(box)
                 / (number of boxes in the same packs)          (AB only; geometry_losses.box_term_sums)

The denominators count the supervised weight of the whole optimizer step: all packs drained in the
step and all gradient-accumulation micro-steps. A pack whose denominator is zero contributes zero
(no clamp to 1, which would silently rescale a nearly empty step).

Because each pack's backward runs before later packs exist, the learner must know the step's
denominator up front: it builds every target of the step (the Pack stage is pure and cheap), sums the
weights, and only then runs the forwards, backpropagating ``pack_sum / step_weight`` for each pack.

Under DDP, gradients are *averaged* over ranks. To make the objective the global token mean, each rank
all-reduces (SUM) its step weight once per optimizer step, before the first backward, and scales
every pack's loss by ``world_size / global_weight``; DDP's division by ``world_size`` then yields
``sum over all ranks' tokens / global_weight``. One all-reduce of a few scalars per step (one per
denominator) is enough; ranks with no supervised tokens still take part so that the collective never
hangs.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs
import torch
import torch.nn.functional as F

from coordexp.core.labels import IGNORE_INDEX  # the one ignore label; learn imports it from here
from coordexp.errors import LossError
from coordexp.learn.coord_targets import (
    coord_logits,
    gaussian_targets,
    rows_before,
    sanitize_logits,
    wasserstein1,
)
from coordexp.learn.geometry_losses import (  # noqa: F401  (re-exported)
    LOSS_BBOX_CIOU,
    LOSS_BBOX_SMOOTHL1,
    LOSS_COORD_CE,
    LOSS_COORD_EHUBER,
    LOSS_COORD_EL1,
    LOSS_COORD_ENTROPY,
    BoxLosses,
    CoordRegularizers,
    bbox_losses,
    coord_regularizers,
    expectation_decode,
)

LOSS_CE = "loss/ce"
LOSS_COORD = "loss/coord"
LOSS_COORD_PREFIX = "loss/coord_prefix"
LOSS_COORD_TAIL = "loss/coord_tail"


class WeightedSum(NamedTuple):
    """A loss sum and the supervised weight it was summed over (0-dim float32 tensors)."""

    total: torch.Tensor
    weight: torch.Tensor


def token_ce(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor | None = None) -> WeightedSum:
    """Weighted next-token CE summed over supervised positions.

    ``labels`` align with input positions (``-100`` = unsupervised); logits at ``t - 1`` predict the
    label at ``t``. ``weights`` (same shape as ``labels``) scale each supervised token, e.g. a desc
    weight or the drop-invalid multiplier; default 1. Only supervised rows are upcast to float32, so
    a 12k-token pack over a 150k vocabulary does not get a full float32 copy.
    """
    if labels.shape != logits.shape[:-1]:
        raise LossError(f"labels {tuple(labels.shape)} must match logits {tuple(logits.shape)} without V")
    if weights is not None and weights.shape != labels.shape:
        raise LossError(f"weights {tuple(weights.shape)} must match labels {tuple(labels.shape)}")
    shifted = labels[..., 1:]
    mask = shifted != IGNORE_INDEX
    rows = logits[..., :-1, :][mask]
    ce = F.cross_entropy(sanitize_logits(rows), shifted[mask].long(), reduction="none")
    w = torch.ones_like(ce) if weights is None else weights[..., 1:][mask].float()
    return WeightedSum((w * ce).sum(), w.sum())


@attrs.frozen
class CoordLossConfig:
    """Knobs of the coord-slot loss (reference rollout 7.3); defaults live in the config schema."""

    sigma: float  # bins
    truncate: float | None  # bins; None = whole range
    temperature: float
    soft_ce_weight: float
    w1_weight: float
    gate_weight: float

    def __attrs_post_init__(self) -> None:
        problems = []
        if self.temperature <= 0:
            problems.append(f"temperature_coord must be > 0, got {self.temperature}")
        for name in ("soft_ce_weight", "w1_weight", "gate_weight"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0, got {getattr(self, name)}")
        if problems:
            raise LossError("; ".join(problems))


class CoordSlotLosses(NamedTuple):
    """Per-slot terms, each [N] float32. ``gate`` is None when its weight is 0 (not computed)."""

    soft_ce: torch.Tensor
    w1: torch.Tensor
    gate: torch.Tensor | None
    loss: torch.Tensor  # soft_ce_weight*soft_ce + w1_weight*w1 + gate_weight*gate


def coord_gate(full_rows: torch.Tensor, z: torch.Tensor, temperature: float) -> torch.Tensor:
    """-log(probability mass on the coord vocabulary), >= 0: [N, V], [N, 1000] -> [N].

    At a coord slot the model should not spend probability on text tokens; softCE and W1 only see the
    renormalised coord distribution, so without this term that leak is invisible to the loss.
    """
    full = sanitize_logits(full_rows) / temperature
    return (torch.logsumexp(full, -1) - torch.logsumexp(z / temperature, -1)).clamp_min(0.0)


def coord_slot_losses(
    logits: torch.Tensor,
    positions: torch.Tensor,
    target_bins: torch.Tensor,
    coord_ids: torch.Tensor,
    *,
    cfg: CoordLossConfig,
    batch_index: torch.Tensor | None = None,
) -> CoordSlotLosses:
    """softCE + W1 + gate at every coord slot (reference rollout 7.2).

    ``positions`` are sequence positions of coord tokens (the logits row used is ``p - 1``),
    ``target_bins`` their bins (GT-derived for matched prefix slots, the token's own bin in the tail).
    """
    full_rows = rows_before(logits, positions, batch_index)
    z = coord_logits(full_rows, coord_ids)
    log_p = torch.log_softmax(z / cfg.temperature, -1)
    q = gaussian_targets(target_bins.to(z.device), cfg.sigma, cfg.truncate)
    soft_ce = -(q * log_p).sum(-1)
    w1 = wasserstein1(log_p.exp(), q)
    loss = cfg.soft_ce_weight * soft_ce + cfg.w1_weight * w1
    gate = None
    if cfg.gate_weight != 0:
        gate = coord_gate(full_rows, z, cfg.temperature)
        loss = loss + cfg.gate_weight * gate
    _check_finite(soft_ce, w1, gate, loss, cfg)
    return CoordSlotLosses(soft_ce, w1, gate, loss)


# Where the coord-loss knobs are set (coordexp.bind.bind_coord_loss: this override, else custom.coord_soft_ce_w1).
_COORD_KNOBS = "custom.extra.rollout_matching"


def _check_finite(
    soft_ce: torch.Tensor, w1: torch.Tensor, gate: torch.Tensor | None, loss: torch.Tensor, cfg: CoordLossConfig
) -> None:
    """Refuse a non-finite slot loss instead of letting it reach the optimizer (or be zeroed).

    The logits are sanitised and the targets checked, so what is left is a float32 overflow: of the
    temperature-scaled logits (|z| <= 1e4 over a tiny ``temperature_coord``) or of a huge term weight. One
    reduction and one host sync per pack, which the learner pays anyway when it reads the pack's sums.
    """
    bad = ~torch.isfinite(loss)
    if not bool(bad.any()):
        return
    terms = {"soft_ce": soft_ce, "w1": w1, **({"gate": gate} if gate is not None else {})}
    which = ", ".join(f"{name} at {int((~torch.isfinite(t)).sum())}" for name, t in terms.items())
    raise LossError(
        f"coord loss is non-finite at {int(bad.sum())} of {loss.numel()} coord slots ({which}); the logits are "
        f"sanitised to |z| <= 1e4, so float32 overflowed: the logits scaled by 1/temperature_coord="
        f"{cfg.temperature:g}, or the weights soft_ce={cfg.soft_ce_weight:g}, w1={cfg.w1_weight:g}, "
        f"gate={cfg.gate_weight:g}. Fix: raise {_COORD_KNOBS}.temperature_coord (or "
        "custom.coord_soft_ce_w1.temperature), or lower the weight"
    )


class CoordLossSummary(NamedTuple):
    """What a pack contributes: the step-level sum/weight, and per-group means for diagnostics."""

    total: torch.Tensor  # sum of w_s * loss_s over all slots
    weight: torch.Tensor  # sum of w_s
    prefix_mean: torch.Tensor  # weighted mean over prefix slots (0 if none) -> loss/coord_prefix
    tail_mean: torch.Tensor  # weighted mean over tail slots (0 if none) -> loss/coord_tail


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    denom = weights.sum()
    return torch.where(denom > 0, (weights * values).sum() / denom.clamp_min(1e-12), values.new_zeros(()))


def summarize_coord_loss(
    per_slot: torch.Tensor, is_prefix: torch.Tensor, slot_weights: torch.Tensor | None = None
) -> CoordLossSummary:
    """Split per-slot losses into the step sum and the prefix / tail diagnostics.

    The prefix (matched rollout objects, GT-derived targets) and the tail (appended FN objects) are
    pooled in the loss but reported apart, because a tail loss that stays high while the prefix one
    falls is how a collapsing FN append shows up.
    """
    if is_prefix.shape != per_slot.shape:
        raise LossError(
            f"is_prefix {tuple(is_prefix.shape)} must match per-slot losses {tuple(per_slot.shape)}"
        )
    w = torch.ones_like(per_slot) if slot_weights is None else slot_weights.float()
    prefix = is_prefix.bool()
    zero = torch.zeros_like(w)
    return CoordLossSummary(
        total=(w * per_slot).sum(),
        weight=w.sum(),
        prefix_mean=_weighted_mean(per_slot, torch.where(prefix, w, zero)),
        tail_mean=_weighted_mean(per_slot, torch.where(prefix, zero, w)),
    )
