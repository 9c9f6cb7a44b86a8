"""Stage-2 AB geometry terms on coord slots (reference AB 4.2-4.3).

Boxes are decoded from the coord distributions by *expectation* (sum_k p_k * k/999) rather than
argmax, so the box losses are differentiable with respect to every coord logit. All functions return
per-box or per-slot values; the caller sums them and divides by the step's count (see the
normalisation contract in ``coordexp.learn.losses``).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import attrs
import torch
import torch.nn.functional as F

from coordexp.errors import LossError
from coordexp.learn.coord_targets import MAX_BIN, bin_values, check_target_bins

LOSS_BBOX_SMOOTHL1 = "loss/bbox_smoothl1"
LOSS_BBOX_CIOU = "loss/bbox_ciou"
LOSS_COORD_CE = "loss/coord_ce"
LOSS_COORD_EL1 = "loss/coord_el1"
LOSS_COORD_EHUBER = "loss/coord_ehuber"
LOSS_COORD_ENTROPY = "loss/coord_entropy"

LOSS_COORD_REG = "loss/coord_reg"
LOSS_BBOX_NONFINITE = "loss/bbox_nonfinite"

CIOU_EPS = 1e-7
MIN_HUBER_DELTA = 1e-6
# SmoothL1's switch point on decoded coords in [0, 1]: PyTorch's default, as the legacy trainer used it (so
# every error is in the quadratic zone: 0.5 * squared error). Not a config knob: the weight scales it.
SMOOTHL1_BETA = 1.0


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError(f"softctx_temperature must be > 0, got {temperature}")


def expectation_decode(coord_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """Expected normalised coordinate of each slot: [N, 1000] sanitised coord logits -> [N] in [0, 1].

    Two equal peaks at bins 0 and 999 decode to 0.5, not to either end: the expectation reports the
    model's uncertainty instead of hiding it (AB 9 L1).
    """
    _check_temperature(temperature)
    probs = torch.softmax(coord_logits.float() / temperature, -1)
    return probs @ bin_values(probs.device)


class BoxLosses(NamedTuple):
    """Per-box terms, [G] float32 each, and how many non-finite values were replaced by 0."""

    smoothl1: torch.Tensor  # mean over the 4 coords of each box
    ciou: torch.Tensor  # 1 - CIoU
    nonfinite: torch.Tensor  # int64 scalar; the caller turns it into a counter metric


def _finite_or_zero(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ok = torch.isfinite(x)
    return torch.where(ok, x, torch.zeros_like(x)), (~ok).sum()


def canonical_boxes(boxes: torch.Tensor) -> torch.Tensor:
    """[G, 4] xyxy in any corner order -> (min x, min y, max x, max y), clipped to [0, 1]."""
    x1, y1, x2, y2 = boxes.unbind(-1)
    out = torch.stack(
        [torch.minimum(x1, x2), torch.minimum(y1, y2), torch.maximum(x1, x2), torch.maximum(y1, y2)], -1
    )
    return out.clamp(0.0, 1.0)


def ciou_loss(pred: torch.Tensor, gt: torch.Tensor, eps: float = CIOU_EPS) -> torch.Tensor:
    """1 - CIoU per box for normalised xyxy boxes [G, 4] (both canonicalised and clipped first).

    Every denominator is kept >= eps, so a degenerate predicted box (zero width after clipping)
    still yields a finite loss and a usable gradient from the centre-distance term.
    """
    p, g = canonical_boxes(pred.float()), canonical_boxes(gt.float())
    pw, ph = (p[:, 2] - p[:, 0]).clamp_min(eps), (p[:, 3] - p[:, 1]).clamp_min(eps)
    gw, gh = (g[:, 2] - g[:, 0]).clamp_min(eps), (g[:, 3] - g[:, 1]).clamp_min(eps)
    iw = (torch.minimum(p[:, 2], g[:, 2]) - torch.maximum(p[:, 0], g[:, 0])).clamp_min(0.0)
    ih = (torch.minimum(p[:, 3], g[:, 3]) - torch.maximum(p[:, 1], g[:, 1])).clamp_min(0.0)
    inter = iw * ih
    iou = inter / (pw * ph + gw * gh - inter).clamp_min(eps)
    rho2 = ((p[:, 0] + p[:, 2] - g[:, 0] - g[:, 2]) ** 2 + (p[:, 1] + p[:, 3] - g[:, 1] - g[:, 3]) ** 2) / 4
    cw = torch.maximum(p[:, 2], g[:, 2]) - torch.minimum(p[:, 0], g[:, 0])
    ch = torch.maximum(p[:, 3], g[:, 3]) - torch.minimum(p[:, 1], g[:, 1])
    c2 = (cw**2 + ch**2).clamp_min(eps)
    v = (4 / math.pi**2) * (torch.atan(gw / gh) - torch.atan(pw / ph)) ** 2
    alpha = v / (1 - iou + v + eps)
    return 1 - (iou - rho2 / c2 - alpha * v)


def bbox_losses(pred: torch.Tensor, gt: torch.Tensor, *, beta: float) -> BoxLosses:
    """SmoothL1 on the raw decoded coords and CIoU on the canonical boxes, per box.

    ``beta`` is SmoothL1's switch point (the legacy trainer used PyTorch's default 1.0). Decoded
    coords lie in [0, 1], so with beta = 1 every error is in the quadratic zone and SmoothL1 is just
    0.5 * squared error; a smaller beta is what makes it behave like L1.
    """
    if pred.shape != gt.shape or pred.shape[-1:] != (4,):
        raise ValueError(f"pred {tuple(pred.shape)} and gt {tuple(gt.shape)} must both be [G, 4] xyxy")
    if beta < 0:
        raise ValueError(f"SmoothL1 beta must be >= 0, got {beta}")
    l1 = F.smooth_l1_loss(pred.float(), gt.float(), beta=beta, reduction="none").mean(-1)
    l1, bad_l1 = _finite_or_zero(l1)
    ciou, bad_ciou = _finite_or_zero(ciou_loss(pred, gt))
    return BoxLosses(l1, ciou, bad_l1 + bad_ciou)


class CoordRegularizers(NamedTuple):
    """Per-slot distribution regularizers, [N] float32 each (AB 4.3)."""

    coord_ce: torch.Tensor  # hard CE over the 1000 bins, no temperature
    el1: torch.Tensor  # E_p |k/999 - gt|
    ehuber: torch.Tensor  # E_p huber(|k/999 - gt|; delta)
    entropy: torch.Tensor  # H(p); the total adds +w*H, so a positive weight sharpens


def coord_regularizers(
    coord_logits: torch.Tensor, target_bins: torch.Tensor, *, temperature: float, huber_delta: float
) -> CoordRegularizers:
    """Distribution-level terms that shape p beyond what the expectation sees.

    The expectation of a bimodal distribution can sit exactly on the target; E|k - gt| and the
    entropy penalise that spread. Entropy is returned as H itself: adding ``+w * H`` to the loss
    minimises entropy for ``w > 0`` (sharpening) and maximises it for ``w < 0``.
    """
    _check_temperature(temperature)
    if huber_delta < MIN_HUBER_DELTA:
        raise ValueError(f"coord_huber_delta must be >= {MIN_HUBER_DELTA}, got {huber_delta}")
    check_target_bins(target_bins)
    z = coord_logits.float()
    log_p = torch.log_softmax(z / temperature, -1)
    p = log_p.exp()
    gt = target_bins.float().unsqueeze(-1) / MAX_BIN
    dist = (bin_values(z.device).unsqueeze(0) - gt).abs()
    huber = torch.where(dist < huber_delta, 0.5 * dist**2 / huber_delta, dist - 0.5 * huber_delta)
    return CoordRegularizers(
        coord_ce=F.cross_entropy(z, target_bins.long(), reduction="none"),
        el1=(p * dist).sum(-1),
        ehuber=(p * huber).sum(-1),
        entropy=-(p * log_p).sum(-1),
    )


@attrs.frozen
class GeometryLossConfig:
    """Weights of the AB geometry and coord-regularizer terms (``custom.extra.stage2_ab``; defaults in the schema).

    ``temperature`` is ``softctx_temperature``: the decode and the regularizers see the distribution the
    soft self-context feeds back. All terms are per box (regularizers: the mean over its 4 slots), so one
    denominator, the step's box count, normalises them all.
    """

    smoothl1_weight: float
    ciou_weight: float
    coord_ce_weight: float
    el1_weight: float
    ehuber_weight: float
    huber_delta: float
    entropy_weight: float  # signed: > 0 sharpens
    temperature: float

    def __attrs_post_init__(self) -> None:
        problems = [] if self.temperature > 0 else [f"softctx_temperature must be > 0, got {self.temperature}"]
        if not self.huber_delta >= MIN_HUBER_DELTA:
            problems.append(f"coord_huber_delta must be >= {MIN_HUBER_DELTA}, got {self.huber_delta}")
        problems += [f"{n} must be >= 0, got {getattr(self, n)}" for n in
                     ("smoothl1_weight", "ciou_weight", "coord_ce_weight", "el1_weight", "ehuber_weight")
                     if not getattr(self, n) >= 0]
        if problems:
            raise LossError("custom.extra.stage2_ab: " + "; ".join(problems))


class BoxTermSums(NamedTuple):
    """One batch's geometry sums over its boxes (0-dim float32); only ``weighted`` carries grad."""

    weighted: torch.Tensor  # sum over boxes of the weighted per-box total: what the step objective adds
    count: torch.Tensor  # boxes
    smoothl1: torch.Tensor
    ciou: torch.Tensor
    coord_ce: torch.Tensor
    el1: torch.Tensor
    ehuber: torch.Tensor
    entropy: torch.Tensor
    reg: torch.Tensor  # weighted regularizer part of ``weighted`` (loss/coord_reg)
    nonfinite: torch.Tensor  # SmoothL1 / CIoU values that were non-finite and counted as 0


def box_term_sums(
    slot_logits: torch.Tensor, slot_bins: torch.Tensor, box_slots: torch.Tensor, cfg: GeometryLossConfig
) -> BoxTermSums:
    """Geometry sums of the boxes ``box_slots`` [G, 4] over the per-slot coord logits [S, 1000] and bins [S].

    The prediction is the expectation-decoded box, the target the slots' target bins / 999 (GT bins on
    Channel A and for FN objects, the matched GT's bins for matched prefix objects).
    """
    g = box_slots.shape[0]
    z = slot_logits[box_slots.reshape(-1)]  # [4G, 1000]
    bins = slot_bins[box_slots.reshape(-1)].to(z.device)
    pred = expectation_decode(z, cfg.temperature).view(g, 4)
    gt = bins.float().view(g, 4) / MAX_BIN
    boxes = bbox_losses(pred, gt, beta=SMOOTHL1_BETA)
    regs = coord_regularizers(z, bins, temperature=cfg.temperature, huber_delta=cfg.huber_delta)
    per_box = [r.view(g, 4).mean(-1) for r in regs]
    ce, el1, ehuber, entropy = per_box
    reg = cfg.coord_ce_weight * ce + cfg.el1_weight * el1 + cfg.ehuber_weight * ehuber + cfg.entropy_weight * entropy
    weighted = cfg.smoothl1_weight * boxes.smoothl1 + cfg.ciou_weight * boxes.ciou + reg
    return BoxTermSums(
        weighted=weighted.sum(),
        count=torch.tensor(float(g), device=z.device),
        smoothl1=boxes.smoothl1.sum().detach(),
        ciou=boxes.ciou.sum().detach(),
        coord_ce=ce.sum().detach(),
        el1=el1.sum().detach(),
        ehuber=ehuber.sum().detach(),
        entropy=entropy.sum().detach(),
        reg=reg.sum().detach(),
        nonfinite=boxes.nonfinite.float(),
    )
