"""Runner for ``loss``: small named loss cases computed with the real torch loss code.

Input: one case ``{"case": NAME, ...}`` or ``{"cases": [case, ...]}``. Cases:
- ``gaussian_target`` {bin, sigma, truncate}: sum, argmax, support and monotonicity of the target;
- ``w1`` {bin_p, bin_q}: W1 between two delta distributions (and the same in bins, x999);
- ``expectation_decode`` {logits: {bin: value}, fill, temperature}: the decoded coordinate, where the
  coord logits are ``fill`` except at the listed bins;
- ``box_losses`` {pred, gt, beta}: per-box SmoothL1 and 1 - CIoU, and whether both are finite;
- ``span_ce`` {ids, prefix_len, predicted, variants: {name: {prefix_ce, tail_ignore}}}: the token CE of one
  assistant span whose labels come from the real span rules (``core.labels.assistant_labels``) under each
  variant of prefix structure positions ``[[pos, weight], ...]`` and tail ignore indices (tail-relative).
  The model is a fixed logit table that puts ``SPAN_CE_MARGIN`` on ``predicted[t]`` at position ``t`` (so a
  position is mispredicted where ``predicted`` differs from ``ids``); one prompt token precedes the span so
  that every assistant position has a logits row predicting it.
Numbers are rounded to 6 decimals so snapshots do not depend on the last float bits. torch is
imported inside the functions: the runner registry must stay importable without it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from coordexp.serde import structure
from coordexp.spec.runners import each_case

TRANSITION = "loss"


def _r(x: float) -> float:
    return round(float(x), 6)


@attrs.frozen
class GaussianCase:
    case: str
    bin: int
    sigma: float
    truncate: float | None


@attrs.frozen
class W1Case:
    case: str
    bin_p: int
    bin_q: int


@attrs.frozen
class DecodeCase:
    case: str
    logits: dict[int, float]  # bin -> coord logit
    fill: float  # coord logit of every other bin
    temperature: float


@attrs.frozen
class BoxCase:
    case: str
    pred: tuple[float, float, float, float]  # norm [0,1] xyxy (any corner order)
    gt: tuple[float, float, float, float]  # norm [0,1] xyxy
    beta: float


SPAN_CE_MARGIN = 5.0  # logit of the predicted token; every other token has 0


@attrs.frozen
class SpanVariant:
    prefix_ce: tuple[tuple[int, float], ...] = ()  # (assistant position, CE weight) of prefix structure tokens
    tail_ignore: tuple[int, ...] = ()  # tail-relative indices without CE


@attrs.frozen
class SpanCECase:
    case: str
    ids: tuple[int, ...]  # assistant span token ids: prefix then tail
    prefix_len: int
    predicted: tuple[int, ...]  # token id the model favours at each assistant position
    variants: dict[str, SpanVariant]


def _gaussian(c: GaussianCase) -> dict[str, Any]:
    import torch

    from coordexp.learn.coord_targets import gaussian_targets

    q = gaussian_targets(torch.tensor([c.bin]), c.sigma, c.truncate)[0]
    peak = int(q.argmax())
    diffs = q[1:] - q[:-1]
    support = torch.nonzero(q > 0).flatten()
    return {
        "sum": _r(q.sum()),
        "argmax": peak,
        "peak": _r(q[peak]),
        "support": [int(support.min()), int(support.max())],
        "non_decreasing_up_to_argmax": bool((diffs[:peak] >= 0).all()),
        "non_increasing_after_argmax": bool((diffs[peak:] <= 0).all()),
    }


def _w1(c: W1Case) -> dict[str, Any]:
    import torch

    from coordexp.learn.coord_targets import one_hot_targets, wasserstein1

    p, q = one_hot_targets(torch.tensor([c.bin_p])), one_hot_targets(torch.tensor([c.bin_q]))
    w1 = float(wasserstein1(p, q)[0])
    return {"w1": _r(w1), "w1_in_bins": _r(w1 * 999)}


def _decode(c: DecodeCase) -> dict[str, Any]:
    import torch

    from coordexp.learn.coord_targets import NUM_BINS
    from coordexp.learn.geometry_losses import expectation_decode

    z = torch.full((1, NUM_BINS), float(c.fill))
    for k, v in c.logits.items():
        z[0, k] = v
    return {"value": _r(expectation_decode(z, c.temperature)[0])}


def _boxes(c: BoxCase) -> dict[str, Any]:
    import torch

    from coordexp.learn.geometry_losses import bbox_losses

    out = bbox_losses(torch.tensor([c.pred]), torch.tensor([c.gt]), beta=c.beta)
    l1, ciou = float(out.smoothl1[0]), float(out.ciou[0])
    return {
        "smoothl1": _r(l1),
        "ciou_loss": _r(ciou),
        "both_finite": math.isfinite(l1) and math.isfinite(ciou),
        "nonfinite_replaced": int(out.nonfinite),
    }


def _span_ce(c: SpanCECase) -> dict[str, Any]:
    import torch

    from coordexp.core.labels import IGNORE_INDEX as IGNORE
    from coordexp.core.labels import assistant_labels
    from coordexp.learn.losses import token_ce

    if len(c.predicted) != len(c.ids):
        raise ValueError(f"span_ce: predicted has {len(c.predicted)} ids for a {len(c.ids)}-token span")
    vocab = max((*c.ids, *c.predicted)) + 1
    logits = torch.zeros(1, len(c.ids) + 1, vocab)
    for t, tok in enumerate(c.predicted):
        logits[0, t, tok] = SPAN_CE_MARGIN  # row t predicts assistant position t (row 0 is the prompt token)
    out: dict[str, Any] = {}
    for name, v in c.variants.items():
        lab = assistant_labels(c.ids, prefix_len=c.prefix_len, coord_id_to_bin={}, prefix_ce=v.prefix_ce,
                               tail_ignore=v.tail_ignore, sample_id=name)
        labels = torch.tensor([[IGNORE, *lab.labels]])
        weights = torch.tensor([[0.0, *lab.weights]])
        total, weight = token_ce(logits, labels, weights)
        out[name] = {
            "supervised_positions": [t for t, x in enumerate(lab.labels) if x != IGNORE],
            "ce_sum": _r(total),
            "weight": _r(weight),
            "ce_mean": _r(total / weight) if float(weight) > 0 else 0.0,
        }
    return {"variants": out}


_CASES: dict[str, tuple[type, Callable[[Any], dict[str, Any]]]] = {
    "gaussian_target": (GaussianCase, _gaussian),
    "w1": (W1Case, _w1),
    "expectation_decode": (DecodeCase, _decode),
    "box_losses": (BoxCase, _boxes),
    "span_ce": (SpanCECase, _span_ce),
}


def _run_case(data: dict[str, Any]) -> dict[str, Any]:
    name = data.get("case") if isinstance(data, dict) else None
    if name not in _CASES:
        raise ValueError(f"loss case must be one of {sorted(_CASES)}, got {name!r}")
    cls, fn = _CASES[name]
    return {"case": name, **fn(structure(data, cls))}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
