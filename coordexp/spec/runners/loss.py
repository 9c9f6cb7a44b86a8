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
- ``coord_gate`` {text_tokens, temperatures, dtypes, rows: {name: {text, coord_fill, coord: {bin: value}}}}: the
  gate of each logits row (``text`` is every text logit, ``coord_fill`` every coord logit but the listed bins;
  numbers or "nan" / "inf" / "-inf") per dtype and temperature, computed alone (``coord_gate``) and inside
  the slot loss (``coord_slot_losses``), with whether it is finite, >= 0 and has a finite gradient everywhere;
  and whether a zero gate weight skips it;
- ``coord_failure`` {seq_len, text_tokens, variants: {name: {positions, bins, weights, coord_ids, temperature}}}:
  one coord slot loss per variant (fields default to a valid single slot), the slot weights going through the
  real ``learn.packed.Segment`` checks; shown: the pack's coord sum and weight, or the error raised;
- ``forward_inputs`` {segments, seed, prefix_len}: tiny segments through ``learn.learner.forward_loss_sums``
  on the tiny Qwen3-VL, packed and padded; what the model receives (``coordexp.spec.runners._forwards``).
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


Logit = float  # fixtures may write "nan", "inf" or "-inf" (JSON has no literal for them); float() reads them


@attrs.frozen
class GateRow:
    text: Logit  # every text-token logit
    coord_fill: Logit  # every coord logit except the listed bins
    coord: dict[int, Logit] = attrs.Factory(dict)  # bin -> coord logit


@attrs.frozen
class GateCase:
    case: str
    text_tokens: int  # vocab ids 0..text_tokens-1 are text, the 1000 coord ids follow
    temperatures: tuple[float, ...]
    dtypes: tuple[str, ...]  # torch dtype names of the logits
    rows: dict[str, GateRow]


def _logit_row(row: GateRow, text_tokens: int) -> list[float]:
    from coordexp.learn.coord_targets import NUM_BINS

    values = [float(row.text)] * text_tokens + [float(row.coord_fill)] * NUM_BINS
    for k, v in row.coord.items():
        values[text_tokens + k] = float(v)
    return values


def _coord_ids(text_tokens: int, count: int = 1000) -> Any:
    import torch

    return torch.arange(text_tokens, text_tokens + count)


def _gate_once(values: list[float], c: GateCase, dtype: Any, temperature: float) -> tuple[float, bool]:
    """(gate, every fence held) for one row: alone and inside the slot loss, with gradients."""
    import torch

    from coordexp.learn.coord_targets import coord_logits
    from coordexp.learn.losses import CoordLossConfig, coord_gate, coord_slot_losses

    ids = _coord_ids(c.text_tokens)
    row = torch.tensor([values], dtype=dtype, requires_grad=True)
    gate = coord_gate(row, coord_logits(row, ids), temperature)
    gate.sum().backward()
    held = bool(torch.isfinite(gate).all() and (gate >= 0).all() and torch.isfinite(row.grad).all())
    seq = torch.cat([row.detach(), torch.zeros_like(row.detach())]).requires_grad_(True)  # slot at 1 reads row 0
    cfg = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=temperature, soft_ce_weight=1.0, w1_weight=1.0,
                          gate_weight=1.0)
    slot = coord_slot_losses(seq, torch.tensor([1]), torch.tensor([500]), ids, cfg=cfg)
    slot.loss.sum().backward()
    held = held and bool(torch.equal(slot.gate, gate.detach()) and torch.isfinite(seq.grad).all())
    return _r(gate[0].detach()), held


def _coord_gate(c: GateCase) -> dict[str, Any]:
    import torch

    from coordexp.learn.losses import CoordLossConfig, coord_slot_losses

    rows: dict[str, Any] = {}
    for name, spec in c.rows.items():
        values, gates, held = _logit_row(spec, c.text_tokens), {}, True
        for dtype_name in c.dtypes:
            out = [_gate_once(values, c, getattr(torch, dtype_name), t) for t in c.temperatures]
            gates[dtype_name] = [g for g, _ in out]
            held = held and all(ok for _, ok in out)
        rows[name] = {"gate": gates, "finite_non_negative_finite_grad": held}
    off = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=0.0)
    seq = torch.zeros(2, c.text_tokens + 1000)
    skipped = coord_slot_losses(seq, torch.tensor([1]), torch.tensor([500]), _coord_ids(c.text_tokens), cfg=off)
    return {"temperatures": list(c.temperatures), "rows": rows, "gate_weight_0_computes_gate": skipped.gate is not None}


@attrs.frozen
class FailureVariant:
    positions: tuple[int, ...] = (2,)  # [1, seq_len) token idx of the coord slots
    bins: tuple[int, ...] = (5,)  # target bin of each slot
    weights: tuple[Logit, ...] = (1.0,)  # coord weight of each slot
    coord_ids: int = 1000  # how many coord ids the loss is given
    temperature: float = 1.0


@attrs.frozen
class FailureCase:
    case: str
    seq_len: int
    text_tokens: int
    variants: dict[str, FailureVariant]


def _failure_variant(name: str, v: FailureVariant, c: FailureCase) -> dict[str, Any]:
    import torch

    from coordexp.core.labels import IGNORE_INDEX
    from coordexp.errors import CoordexpError
    from coordexp.learn.losses import CoordLossConfig, coord_slot_losses, summarize_coord_loss
    from coordexp.learn.packed import Segment

    n = len(v.positions)
    try:
        seg = Segment(
            key=name, input_ids=torch.arange(c.seq_len), mm_token_type_ids=torch.zeros(c.seq_len, dtype=torch.long),
            pixel_values=None, image_grid_thw=None, labels=torch.full((c.seq_len,), IGNORE_INDEX),
            ce_weights=torch.zeros(c.seq_len), coord_positions=torch.tensor(v.positions, dtype=torch.long),
            coord_bins=torch.tensor(v.bins, dtype=torch.long), coord_is_prefix=torch.zeros(n, dtype=torch.bool),
            coord_weights=torch.tensor([float(w) for w in v.weights]),
        )
        logits = torch.zeros(c.seq_len, c.text_tokens + 1000)
        logits[:, c.text_tokens + 7] = 5.0  # every row favours bin 7
        cfg = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=v.temperature, soft_ce_weight=1.0, w1_weight=1.0,
                              gate_weight=1.0)
        slots = coord_slot_losses(logits, seg.coord_positions, seg.coord_bins,
                                  _coord_ids(c.text_tokens, v.coord_ids), cfg=cfg)
        s = summarize_coord_loss(slots.loss, seg.coord_is_prefix, seg.coord_weights)
    except (CoordexpError, ValueError) as exc:
        return {"error": {"type": type(exc).__name__, "message": str(exc)}}
    return {"coord_sum": _r(s.total), "coord_weight": _r(s.weight)}


def _coord_failure(c: FailureCase) -> dict[str, Any]:
    return {"variants": {name: _failure_variant(name, v, c) for name, v in c.variants.items()}}


@attrs.frozen
class ForwardCase:
    case: str
    segments: int
    seed: int
    prefix_len: int


def _forward_inputs(c: ForwardCase) -> dict[str, Any]:
    from coordexp.spec.runners._forwards import learner_inputs

    return learner_inputs(segments=c.segments, seed=c.seed, prefix_len=c.prefix_len)


_CASES: dict[str, tuple[type, Callable[[Any], dict[str, Any]]]] = {
    "gaussian_target": (GaussianCase, _gaussian),
    "w1": (W1Case, _w1),
    "expectation_decode": (DecodeCase, _decode),
    "box_losses": (BoxCase, _boxes),
    "span_ce": (SpanCECase, _span_ce),
    "coord_gate": (GateCase, _coord_gate),
    "coord_failure": (FailureCase, _coord_failure),
    "forward_inputs": (ForwardCase, _forward_inputs),
}


def _run_case(data: dict[str, Any]) -> dict[str, Any]:
    name = data.get("case") if isinstance(data, dict) else None
    if name not in _CASES:
        raise ValueError(f"loss case must be one of {sorted(_CASES)}, got {name!r}")
    cls, fn = _CASES[name]
    return {"case": name, **fn(structure(data, cls))}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
