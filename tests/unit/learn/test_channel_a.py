"""Channel A's soft self-context on the tiny Qwen3-VL, and the geometry terms: each property of issue 11 item 2.

The model is the real tiny Qwen3-VL; hooks only observe what it is given (or, for the geometry case, the
logits are written by hand). Every check would fail on the legacy behaviour it names.
"""

from __future__ import annotations

import functools

import pytest
import torch

from coordexp.data.tiny import build_tiny_qwen3vl
from coordexp.learn.channel_a import SoftContextConfig, compact_rows
from coordexp.learn.coord_targets import NUM_BINS
from coordexp.learn.geometry_losses import GeometryLossConfig, box_term_sums
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import coord_ids_tensor, coord_token_ids
from coordexp.learn.packed import pack_segments
from coordexp.learn.step_loss import compact, forward_loss_sums
from coordexp.learn.tiny_segments import tiny_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
CE_ONLY = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=0.0, w1_weight=0.0, gate_weight=0.0)
GEOMETRY = GeometryLossConfig(smoothl1_weight=1.0, ciou_weight=1.0, coord_ce_weight=1.0, el1_weight=1.0,
                              ehuber_weight=1.0, huber_delta=0.01, entropy_weight=1.0, temperature=1.0)


@functools.lru_cache(maxsize=1)
def _tiny():
    tiny = build_tiny_qwen3vl(seed=0)
    segments = tiny_segments(tiny.processor, 2, seed=3, max_objects=2, boxes=True)
    return tiny, pack_segments(segments, model=tiny.model), coord_ids_tensor(coord_token_ids(tiny.processor.tokenizer))


class _Calls:
    """Every forward of the model: its keyword arguments, whether grad was on, and its logits."""

    def __init__(self, model):
        self.kwargs, self.grad, self.logits = [], [], []
        self.handles = [
            model.register_forward_pre_hook(self._before, with_kwargs=True),
            model.register_forward_hook(lambda _m, _a, out: self.logits.append(out.logits.detach())),
        ]

    def _before(self, _module, _args, kwargs):
        self.kwargs.append(dict(kwargs))
        self.grad.append(torch.is_grad_enabled())

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.handles:
            h.remove()


def _grads(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize(("n_iter", "grad_on"), [(2, [True, True]), (3, [True, False, True])])
def test_em_detach_keeps_the_first_forward_ce_gradient(n_iter, grad_on):
    """Only CE is weighted: its gradient is the plain forward's (the legacy em_detach ran forward 0 without grad)."""
    tiny, batch, coord_ids = _tiny()
    cfg = SoftContextConfig(n_iter, "em_detach", 1.0, "soft")
    with _Calls(tiny.model) as calls:
        sums = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=CE_ONLY, soft_context=cfg)
    assert calls.grad == grad_on
    got = _grads(tiny.model, sums.ce_sum + sums.coord_sum)
    plain = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=CE_ONLY)
    want = _grads(tiny.model, plain.ce_sum + plain.coord_sum)
    assert got.keys() == want.keys() and any(float(g.abs().sum()) > 0 for g in got.values())
    for name, g in got.items():
        torch.testing.assert_close(g, want[name], atol=1e-6, rtol=1e-5, msg=name)


def _slot_embeddings(mode: str):
    """(forward-0 embeddings, forward-1 embeddings, forward-0 argmax bin at each slot) of a 2-forward run."""
    tiny, batch, coord_ids = _tiny()
    with _Calls(tiny.model) as calls, torch.no_grad():
        forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD,
                          soft_context=SoftContextConfig(2, "unroll", 1.0, mode))
    keep, *_ = compact(batch)
    rows = calls.logits[0][compact_rows(keep, batch.coord_batch_index, batch.coord_positions - 1)]
    argmax = rows[:, coord_ids].argmax(-1)
    return calls.kwargs[0]["inputs_embeds"], calls.kwargs[1]["inputs_embeds"], argmax


def test_st_forward_feeds_the_argmax_bin_embeddings_exactly():
    tiny, batch, coord_ids = _tiny()
    first, second, argmax = _slot_embeddings("st")
    b, p = batch.coord_batch_index, batch.coord_positions
    with torch.no_grad():
        hard = tiny.model.get_input_embeddings()(coord_ids[argmax])
    assert torch.equal(second[b, p], hard)
    other = torch.ones(first.shape[:2], dtype=torch.bool)
    other[b, p] = False
    assert torch.equal(second[other], first[other])  # prompt, image placeholders and text rows: untouched
    soft_second = _slot_embeddings("soft")[1]
    assert not torch.equal(soft_second[b, p], hard)  # the soft context is the expectation, not the argmax row


@pytest.mark.parametrize(("mode", "grad_mode", "reaches"), [("st", "unroll", True), ("soft", "unroll", True),
                                                         ("st", "em_detach", False)])
def test_last_forward_coord_gradient_reaches_forward_zero_through_the_context(mode, grad_mode, reaches):
    """Straight-through still passes the expectation's gradient back to forward 0's coord logits (unroll);
    em_detach cuts it there."""
    tiny, batch, coord_ids = _tiny()
    first: list[torch.Tensor] = []

    def keep_first(_m, _a, out):
        if not first:
            out.logits.retain_grad()
            first.append(out.logits)

    handle = tiny.model.register_forward_hook(keep_first)
    try:
        sums = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD,
                                 soft_context=SoftContextConfig(2, grad_mode, 1.0, mode))
    finally:
        handle.remove()
    sums.coord_sum.backward()  # the coord loss is read from the last forward only
    grad = first[0].grad
    assert (grad is not None and float(grad.abs().sum()) > 0) == reaches


def test_one_forward_is_plain_teacher_forcing_and_forward_zero_matches_it():
    tiny, batch, coord_ids = _tiny()
    with torch.no_grad(), _Calls(tiny.model) as calls:
        plain = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD)
        one = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD,
                                soft_context=SoftContextConfig(1, "unroll", 1.0, "st"))
        two = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD,
                                soft_context=SoftContextConfig(2, "unroll", 1.0, "soft"))
    assert len(calls.kwargs) == 4 and "input_ids" in calls.kwargs[1]
    assert all(torch.equal(x, y) for x, y in zip(plain, one))
    # forward 0 of the soft context (inputs_embeds + explicit positions, the model scattering the image features
    # itself) is the plain forward: the CE, which it alone feeds, is the same
    assert "input_ids" not in calls.kwargs[2] and calls.kwargs[2]["position_ids"].shape[0] == 4
    torch.testing.assert_close(calls.logits[2], calls.logits[0], atol=1e-5, rtol=1e-5)
    assert float(two.ce_sum) == pytest.approx(float(plain.ce_sum), rel=1e-6)
    assert float(two.coord_sum) != pytest.approx(float(plain.coord_sum), rel=1e-6)


def _peaked(bins: list[int], shift: int = 0) -> torch.Tensor:
    z = torch.full((len(bins), NUM_BINS), -1e4)
    z[torch.arange(len(bins)), torch.tensor(bins) + shift] = 1e4
    return z


def test_geometry_terms_vanish_for_a_perfect_expectation_and_are_positive_otherwise():
    bins = [100, 200, 400, 600, 10, 20, 30, 40]
    boxes = torch.tensor([[0, 1, 2, 3], [4, 5, 6, 7]])
    target = torch.tensor(bins)
    perfect = box_term_sums(_peaked(bins), target, boxes, GEOMETRY)
    off = box_term_sums(_peaked(bins, shift=5), target, boxes, GEOMETRY)
    terms = ("smoothl1", "ciou", "coord_ce", "el1", "ehuber")
    assert float(perfect.count) == 2 and float(perfect.nonfinite) == 0
    for name in (*terms, "entropy", "weighted"):
        assert abs(float(getattr(perfect, name))) < 1e-6, name
    for name in (*terms, "weighted"):
        assert float(getattr(off, name)) > 0, name
    spread = box_term_sums(torch.zeros(8, NUM_BINS), target, boxes, GEOMETRY)
    assert float(spread.entropy) == pytest.approx(2 * torch.log(torch.tensor(1000.0)).item(), rel=1e-5)


def test_no_boxes_give_zero_geometry():
    out = box_term_sums(torch.zeros(3, NUM_BINS), torch.tensor([1, 2, 3]), torch.zeros((0, 4), dtype=torch.long),
                        GEOMETRY)
    assert all(float(v) == 0 for v in out)


def test_a_pack_without_coord_slots_runs_one_forward():
    tiny, _, coord_ids = _tiny()
    segments = [s for s in tiny_segments(tiny.processor, 3, seed=11, max_objects=3) if not s.coord_positions.numel()]
    assert segments, "seed 11 draws a sample without objects"
    batch = pack_segments(segments, model=tiny.model)
    with _Calls(tiny.model) as calls, torch.no_grad():
        soft = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=COORD, geometry=GEOMETRY,
                                 soft_context=SoftContextConfig(3, "unroll", 1.0, "soft"))
    assert len(calls.kwargs) == 1 and float(soft.ce_weight) > 0 and float(soft.box_weight) == 0
