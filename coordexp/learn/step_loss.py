"""One batch's loss sums, and the one formula that turns a step's sums into its objective.

The step objective (normalisation contract in ``coordexp.learn.losses``) is, over every pack of the step::

    loss = sum ce_sum / W_ce  +  sum coord_sum / W_coord  +  sum box_sum / W_box

with ``W_*`` the step's total CE weight, coord-slot weight and box count, known before the first forward
(``step_weights``), so each pack backpropagates its share (``pack_loss``) and the result is the same for any
number or fill of packs. ``box_sum`` is the weighted AB geometry total (SmoothL1, CIoU and the coord
regularizers, ``coordexp.learn.geometry_losses``); without a geometry config it is 0 and the formula is the
plain CE + coord objective.

Logits are computed only for rows that a loss reads (``logits_to_keep`` as a boolean mask): prompt and
image tokens, most of a long pack, never go through the vocabulary projection. The kept rows are laid out
as a compact sequence (row i predicts compact position i + 1), so the loss functions apply unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch

from coordexp.learn.attention import packed_forward_kwargs
from coordexp.learn.channel_a import SoftContextConfig, checked_rows, soft_context_logits
from coordexp.learn.coord_targets import coord_logits
from coordexp.learn.geometry_losses import GeometryLossConfig, box_term_sums
from coordexp.learn.losses import IGNORE_INDEX, CoordLossConfig, coord_slot_losses, token_ce
from coordexp.learn.packed import TrainBatch

_ZERO = torch.zeros(())


class LossSums(NamedTuple):
    """One batch's loss sums and weights (0-dim float32). ``ce_sum``, ``coord_sum`` and ``box_sum`` carry grad;
    the per-term geometry sums are detached, for the metrics. Geometry fields stay 0 without a geometry config."""

    ce_sum: torch.Tensor
    ce_weight: torch.Tensor
    coord_sum: torch.Tensor
    coord_weight: torch.Tensor
    prefix_sum: torch.Tensor
    prefix_weight: torch.Tensor
    tail_sum: torch.Tensor
    tail_weight: torch.Tensor
    box_sum: torch.Tensor = _ZERO
    box_weight: torch.Tensor = _ZERO
    smoothl1_sum: torch.Tensor = _ZERO
    ciou_sum: torch.Tensor = _ZERO
    coord_ce_sum: torch.Tensor = _ZERO
    el1_sum: torch.Tensor = _ZERO
    ehuber_sum: torch.Tensor = _ZERO
    entropy_sum: torch.Tensor = _ZERO
    reg_sum: torch.Tensor = _ZERO
    nonfinite: torch.Tensor = _ZERO


class StepWeights(NamedTuple):
    """The step's denominators: total CE weight, coord-slot weight and boxes with geometry."""

    ce: float
    coord: float
    box: float = 0.0


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else 0.0


def step_weights(packs: Sequence[TrainBatch]) -> StepWeights:
    """This process's denominators over one optimizer step's packs."""
    return StepWeights(sum(p.ce_weight() for p in packs), sum(p.coord_weight() for p in packs),
                       sum(p.box_weight() for p in packs))


def pack_loss(sums: LossSums, w_ce: float, w_coord: float, w_box: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """One pack's share of the step loss: its sums over the step's total weights (the formula above)."""
    return (sums.ce_sum * _ratio(scale, w_ce) + sums.coord_sum * _ratio(scale, w_coord)
            + sums.box_sum * _ratio(scale, w_box))


def compact(batch: TrainBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows to keep [B, L] and, in compact numbering, CE labels/weights [K + 1] and coord positions."""
    ce_mask = batch.ce_mask()
    keep = torch.zeros_like(ce_mask)
    keep[:, :-1] = ce_mask[:, 1:]
    keep[batch.coord_batch_index, batch.coord_positions - 1] = True
    row_of = keep.flatten().cumsum(0).view_as(keep) - 1  # compact row of each kept (b, t)
    n_rows = int(keep.sum())
    ce_b, ce_p = ce_mask.nonzero(as_tuple=True)
    ce_pos = row_of[ce_b, ce_p - 1] + 1
    labels = torch.full((n_rows + 1,), IGNORE_INDEX, dtype=torch.long, device=keep.device)
    weights = torch.zeros(n_rows + 1, dtype=torch.float32, device=keep.device)
    labels[ce_pos] = batch.labels[ce_b, ce_p].long()
    weights[ce_pos] = batch.ce_weights[ce_b, ce_p].float()
    coord_pos = row_of[batch.coord_batch_index, batch.coord_positions - 1] + 1
    return keep, labels, weights, coord_pos


def attention_kwargs(model: torch.nn.Module, batch: TrainBatch) -> dict:
    """Segment bounds for a packed row (padded batches carry an attention mask instead)."""
    if "attention_mask" in batch.inputs:
        return {}
    return packed_forward_kwargs(model, batch.cu_seqlens, device=batch.inputs["input_ids"].device)


def _with_placeholder(rows: torch.Tensor) -> torch.Tensor:
    return torch.cat([rows, rows.new_zeros(1, rows.shape[-1])])  # +1 row that no loss reads


def forward_loss_sums(
    model: torch.nn.Module,
    batch: TrainBatch,
    *,
    coord_ids: torch.Tensor,
    coord_cfg: CoordLossConfig,
    geometry: GeometryLossConfig | None = None,
    soft_context: SoftContextConfig | None = None,
) -> LossSums:
    """Forward ``batch`` and return its loss sums.

    ``soft_context`` (Channel A with ``n_softctx_iter > 1``) runs the soft self-context forwards: CE from the
    first, coord and geometry losses from the last. Otherwise one plain forward feeds every loss.
    """
    keep, labels, weights, coord_pos = compact(batch)
    attention = attention_kwargs(model, batch)
    if soft_context is not None and soft_context.iterates:
        first, slot_rows = soft_context_logits(model, batch, keep=keep, coord_ids=coord_ids, cfg=soft_context,
                                               attention=attention)
        slot_logits, slot_pos = _with_placeholder(slot_rows), torch.arange(1, slot_rows.shape[0] + 1,
                                                                           device=slot_rows.device)
    else:
        out = model(**batch.inputs, **attention, logits_to_keep=keep, use_cache=False)
        first = checked_rows(out, keep)
        slot_logits, slot_pos = None, coord_pos
    logits = _with_placeholder(first)
    slot_logits = logits if slot_logits is None else slot_logits
    ce = token_ce(logits, labels, weights)
    slots = coord_slot_losses(slot_logits, slot_pos, batch.coord_bins, coord_ids, cfg=coord_cfg)
    w = batch.coord_weights.float()
    prefix_w = torch.where(batch.coord_is_prefix, w, torch.zeros_like(w))
    tail_w = w - prefix_w
    sums = LossSums(
        ce_sum=ce.total,
        ce_weight=ce.weight,
        coord_sum=(w * slots.loss).sum(),
        coord_weight=w.sum(),
        prefix_sum=(prefix_w * slots.loss).sum().detach(),
        prefix_weight=prefix_w.sum(),
        tail_sum=(tail_w * slots.loss).sum().detach(),
        tail_weight=tail_w.sum(),
    )
    if geometry is None:
        return sums
    z = coord_logits(slot_logits[slot_pos - 1], coord_ids)
    geo = box_term_sums(z, batch.coord_bins, batch.box_slots, geometry)
    return sums._replace(
        box_sum=geo.weighted, box_weight=geo.count, smoothl1_sum=geo.smoothl1, ciou_sum=geo.ciou,
        coord_ce_sum=geo.coord_ce, el1_sum=geo.el1, ehuber_sum=geo.ehuber, entropy_sum=geo.entropy,
        reg_sum=geo.reg, nonfinite=geo.nonfinite,
    )


def backward_packs(
    model: torch.nn.Module,
    packs: Sequence[TrainBatch],
    *,
    coord_ids: torch.Tensor,
    coord_cfg: CoordLossConfig,
    geometry: GeometryLossConfig | None = None,
    soft_context: SoftContextConfig | None = None,
) -> float:
    """Single-process forward/backward of one step's packs (gradients zeroed first); returns the step loss.

    The same normalisation as ``Learner.step`` without the optimizer, DDP or autocast, so benchmarks and
    equivalence tests measure exactly what training computes.
    """
    weights = step_weights(packs)
    model.zero_grad(set_to_none=True)
    total = 0.0
    for pack in packs:
        sums = forward_loss_sums(model, pack, coord_ids=coord_ids, coord_cfg=coord_cfg, geometry=geometry,
                                 soft_context=soft_context)
        loss = pack_loss(sums, *weights)
        loss.backward()
        total += float(loss.detach())
    return total
