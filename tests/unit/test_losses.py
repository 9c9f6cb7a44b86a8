"""Stage-2 loss functions (reference rollout 7, 14.8 C3/C4; AB 4, 9 L1/L2)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from coordexp.errors import CoordexpError, LossError
from coordexp.learn import losses as L
from coordexp.learn.coord_targets import (
    coord_logits,
    gaussian_targets,
    one_hot_targets,
    rows_before,
    sanitize_logits,
    wasserstein1,
)

VOCAB = 1010
COORD_IDS = torch.arange(5, 1005)  # <|coord_k|> has vocab id 5 + k


def _cfg(**kw) -> L.CoordLossConfig:
    base = dict(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
    base.update(kw)
    return L.CoordLossConfig(**base)


def test_gaussian_target_c3():
    q = gaussian_targets(torch.tensor([500]), 2.0, 16)[0]
    assert float(q.sum()) == pytest.approx(1.0, abs=1e-6)
    assert int(q.argmax()) == 500
    d = q[1:] - q[:-1]
    assert bool((d[:500] >= 0).all()) and bool((d[500:] <= 0).all())
    nz = torch.nonzero(q).flatten()
    assert (int(nz.min()), int(nz.max())) == (484, 516)


def test_gaussian_target_rejects_bad_inputs():
    with pytest.raises(ValueError, match="target_sigma"):
        gaussian_targets(torch.tensor([1]), 0.0, None)
    with pytest.raises(ValueError, match="0..999"):
        gaussian_targets(torch.tensor([1000]), 2.0, None)
    with pytest.raises(ValueError, match="integer"):
        gaussian_targets(torch.tensor([1.5]), 2.0, None)


def test_w1_c4():
    p, same, far = (one_hot_targets(torch.tensor([b])) for b in (10, 10, 12))
    assert float(wasserstein1(p, same)[0]) == 0.0
    assert float(wasserstein1(p, far)[0]) == pytest.approx(2 / 999, rel=1e-6)


def test_sanitize_logits():
    z = sanitize_logits(
        torch.tensor([float("nan"), float("inf"), -float("inf"), 3e5, 1.5], dtype=torch.bfloat16)
    )
    assert z.dtype == torch.float32
    assert z.tolist() == [0.0, 1e4, -1e4, 1e4, 1.5]


def _logits_peaked_at(bins: list[int], seq_len: int = 8, text_logit: float = -30.0) -> torch.Tensor:
    """[T, V] logits whose row p-1 puts (almost) all mass on coord bin bins[i] for slot position p=i+1."""
    z = torch.full((seq_len, VOCAB), text_logit)
    z[:, COORD_IDS] = -30.0
    for i, b in enumerate(bins):
        z[i, COORD_IDS[b]] = 30.0
    return z


def test_rows_before_uses_previous_position_and_checks_bounds():
    logits = torch.randn(2, 6, VOCAB)
    rows = rows_before(logits, torch.tensor([1, 5]), torch.tensor([1, 0]))
    assert torch.equal(rows[0], logits[1, 0]) and torch.equal(rows[1], logits[0, 4])
    with pytest.raises(ValueError, match="batch_index"):
        rows_before(logits, torch.tensor([1]))
    with pytest.raises(ValueError, match=r"\[1, 6\)"):
        rows_before(logits[0], torch.tensor([0]))


def test_gate_zero_when_all_mass_on_coords():
    out = L.coord_slot_losses(
        _logits_peaked_at([7]), torch.tensor([1]), torch.tensor([7]), COORD_IDS, cfg=_cfg()
    )
    assert float(out.gate[0]) == pytest.approx(0.0, abs=1e-6)
    z = torch.zeros(1, VOCAB)  # uniform: coord mass is 1000 / 1010
    gate = L.coord_gate(z, coord_logits(z, COORD_IDS), 1.0)
    assert float(gate[0]) == pytest.approx(-math.log(1000 / VOCAB), abs=1e-5)


def test_gate_skipped_when_weight_zero():
    out = L.coord_slot_losses(
        _logits_peaked_at([7]), torch.tensor([1]), torch.tensor([7]), COORD_IDS, cfg=_cfg(gate_weight=0.0)
    )
    assert out.gate is None
    assert torch.allclose(out.loss, out.soft_ce + out.w1)


def test_softce_minimum_at_target():
    """softCE is smallest (= H(q)) when the predicted coord distribution equals the Gaussian target."""
    cfg = _cfg(gate_weight=0.0)
    target = torch.tensor([300])
    q = gaussian_targets(target, cfg.sigma, cfg.truncate)[0]

    def soft_ce(coord_row: torch.Tensor) -> float:
        logits = torch.full((2, VOCAB), -1e4)
        logits[0, COORD_IDS] = coord_row
        return float(L.coord_slot_losses(logits, torch.tensor([1]), target, COORD_IDS, cfg=cfg).soft_ce[0])

    at_target = soft_ce(q.log())
    entropy_q = float(-(q[q > 0] * q[q > 0].log()).sum())
    assert at_target == pytest.approx(entropy_q, abs=1e-5)
    shifted = gaussian_targets(torch.tensor([303]), cfg.sigma, None)[0].log()
    broader = gaussian_targets(target, 2 * cfg.sigma, None)[0].log()
    one_hot = torch.full((1000,), -20.0)
    one_hot[300] = 0.0
    for other in (shifted, broader, one_hot, torch.zeros(1000)):
        assert soft_ce(other) > at_target + 1e-3


def test_coord_slot_losses_match_manual_and_weights_combine():
    torch.manual_seed(0)
    logits = torch.randn(5, VOCAB)
    pos, bins = torch.tensor([1, 3, 4]), torch.tensor([0, 500, 999])
    cfg = _cfg(temperature=0.7, soft_ce_weight=2.0, w1_weight=3.0, gate_weight=0.5)
    out = L.coord_slot_losses(logits, pos, bins, COORD_IDS, cfg=cfg)
    z = logits[pos - 1][:, COORD_IDS]
    logp = torch.log_softmax(z / 0.7, -1)
    q = gaussian_targets(bins, 2.0, 16)
    soft = -(q * logp).sum(-1)
    w1 = (logp.exp().cumsum(-1) - q.cumsum(-1)).abs().sum(-1) / 999
    gate = torch.logsumexp(logits[pos - 1] / 0.7, -1) - torch.logsumexp(z / 0.7, -1)
    assert torch.allclose(out.soft_ce, soft, atol=1e-5)
    assert torch.allclose(out.w1, w1, atol=1e-6)
    assert torch.allclose(out.gate, gate, atol=1e-5)
    assert torch.allclose(out.loss, 2 * soft + 3 * w1 + 0.5 * gate, atol=1e-4)


def test_gradients_finite_even_with_nonfinite_logits():
    logits = torch.randn(6, VOCAB)
    logits[0, COORD_IDS[3]] = float("nan")
    logits[2, 0] = float("inf")
    logits.requires_grad_(True)
    out = L.coord_slot_losses(
        logits, torch.tensor([1, 3]), torch.tensor([3, 10]), COORD_IDS, cfg=_cfg(temperature=0.1)
    )
    labels = torch.full((6,), L.IGNORE_INDEX)
    labels[4] = 2
    ce = L.token_ce(logits, labels)
    (out.loss.sum() + ce.total).backward()
    assert torch.isfinite(out.loss).all()
    assert torch.isfinite(logits.grad).all()


def test_an_overflowing_coord_loss_raises_instead_of_reaching_the_optimizer():
    logits = torch.zeros(4, VOCAB)
    logits[:, COORD_IDS[7]] = 5.0
    with pytest.raises(LossError, match=r"non-finite at 1 of 1 coord slots .*temperature_coord=1e-38"):
        L.coord_slot_losses(logits, torch.tensor([2]), torch.tensor([5]), COORD_IDS, cfg=_cfg(temperature=1e-38))
    ok = L.coord_slot_losses(logits, torch.tensor([2]), torch.tensor([5]), COORD_IDS, cfg=_cfg(temperature=1e-3))
    assert torch.isfinite(ok.loss).all() and float(ok.loss[0]) > 0


def test_coord_loss_input_errors_are_coordexp_errors():
    logits = torch.zeros(4, VOCAB)
    with pytest.raises(LossError, match="0..999"):
        L.coord_slot_losses(logits, torch.tensor([2]), torch.tensor([1000]), COORD_IDS, cfg=_cfg())
    with pytest.raises(LossError, match="1000 vocab ids"):
        L.coord_slot_losses(logits, torch.tensor([2]), torch.tensor([5]), COORD_IDS[:-1], cfg=_cfg())
    assert issubclass(LossError, CoordexpError) and issubclass(LossError, ValueError)


def test_token_weighted_ce_equals_manual():
    torch.manual_seed(1)
    logits = torch.randn(2, 5, 11, dtype=torch.bfloat16)
    labels = torch.tensor([[-100, 3, 4, -100, 7], [-100, -100, 1, 2, 10]])
    weights = torch.tensor([[9.0, 1.0, 0.5, 9.0, 2.0], [9.0, 9.0, 1.0, 0.0, 3.0]])
    out = L.token_ce(logits, labels, weights)
    total, wsum = 0.0, 0.0
    for b in range(2):
        for t in range(1, 5):
            if labels[b, t] != -100:
                ce = F.cross_entropy(logits[b, t - 1].float().unsqueeze(0), labels[b, t].unsqueeze(0))
                total += float(weights[b, t]) * float(ce)
                wsum += float(weights[b, t])
    assert float(out.total) == pytest.approx(total, rel=1e-5)
    assert float(out.weight) == pytest.approx(wsum)
    unweighted = L.token_ce(logits, labels)
    assert float(unweighted.weight) == 6.0


def test_token_ce_across_packs_is_a_token_mean():
    """Summing per-pack sums and weights gives the mean over all tokens, whatever the pack sizes."""
    torch.manual_seed(2)
    big, small = torch.randn(40, 11), torch.randn(3, 11)
    lb, ls = torch.randint(0, 11, (40,)), torch.randint(0, 11, (3,))
    a, b = L.token_ce(big, lb), L.token_ce(small, ls)
    pooled = torch.cat(
        [
            F.cross_entropy(big[:-1], lb[1:], reduction="none"),
            F.cross_entropy(small[:-1], ls[1:], reduction="none"),
        ]
    ).mean()
    assert float((a.total + b.total) / (a.weight + b.weight)) == pytest.approx(float(pooled), rel=1e-5)


def test_token_ce_shape_errors():
    with pytest.raises(ValueError, match="labels"):
        L.token_ce(torch.randn(4, 11), torch.zeros(5, dtype=torch.long))


def test_prefix_tail_split():
    per_slot = torch.tensor([1.0, 3.0, 10.0, 20.0])
    is_prefix = torch.tensor([True, True, False, False])
    s = L.summarize_coord_loss(per_slot, is_prefix)
    assert (float(s.total), float(s.weight)) == (34.0, 4.0)
    assert (float(s.prefix_mean), float(s.tail_mean)) == (2.0, 15.0)
    only_tail = L.summarize_coord_loss(per_slot, torch.zeros(4, dtype=torch.bool))
    assert float(only_tail.prefix_mean) == 0.0 and float(only_tail.tail_mean) == 8.5
    weighted = L.summarize_coord_loss(per_slot, is_prefix, torch.tensor([1.0, 3.0, 1.0, 1.0]))
    assert float(weighted.prefix_mean) == 2.5 and float(weighted.total) == 40.0


def test_expectation_decode_l1():
    z = torch.full((1, 1000), -100.0)
    z[0, 0] = z[0, 999] = 0.0
    assert float(L.expectation_decode(z, 1.0)[0]) == pytest.approx(0.5, abs=1e-6)


def test_box_losses_l2_finite_and_values():
    out = L.bbox_losses(
        torch.tensor([[1.2, -0.1, -0.2, 0.5]]), torch.tensor([[0.0, 0.0, 1.0, 1.0]]), beta=1.0
    )
    assert torch.isfinite(out.smoothl1).all() and torch.isfinite(out.ciou).all()
    assert int(out.nonfinite) == 0
    assert float(out.smoothl1[0]) == pytest.approx((0.7 + 0.005 + 0.7 + 0.125) / 4)
    v = 4 / math.pi**2 * (math.atan(1.0) - math.atan(2.0)) ** 2  # pred clips to [0,0,1,0.5]: IoU 0.5
    expected = 1 - (0.5 - 0.0625 / 2 - v / (0.5 + v) * v)
    assert float(out.ciou[0]) == pytest.approx(expected, rel=1e-5)


def test_ciou_zero_for_identical_boxes_and_gradient_for_degenerate():
    gt = torch.tensor([[0.1, 0.2, 0.5, 0.9]])
    assert float(L.bbox_losses(gt.clone(), gt, beta=1.0).ciou[0]) == pytest.approx(0.0, abs=1e-5)
    pred = torch.tensor([[0.3, 0.3, 0.3, 0.3]], requires_grad=True)  # zero-area prediction
    out = L.bbox_losses(pred, gt, beta=1.0)
    (out.ciou.sum() + out.smoothl1.sum()).backward()
    assert torch.isfinite(pred.grad).all() and float(pred.grad.abs().sum()) > 0


def test_smoothl1_is_half_mse_in_unit_range():
    pred, gt = torch.tensor([[0.1, 0.9, 0.4, 0.3]]), torch.tensor([[0.5, 0.2, 0.4, 0.0]])
    out = L.bbox_losses(pred, gt, beta=1.0)
    assert float(out.smoothl1[0]) == pytest.approx(float(0.5 * ((pred - gt) ** 2).mean()))


def test_regularizers():
    z = torch.full((2, 1000), -50.0)
    z[0, 100] = 50.0  # sharp at the target
    z[1, 0] = z[1, 200] = 50.0  # bimodal around the target: expectation exact, spread large
    reg = L.coord_regularizers(z, torch.tensor([100, 100]), temperature=1.0, huber_delta=0.001)
    assert float(reg.el1[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(reg.el1[1]) == pytest.approx(100 / 999, rel=1e-5)
    assert float(reg.ehuber[1]) == pytest.approx(100 / 999 - 0.0005, rel=1e-5)
    assert float(reg.entropy[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(reg.entropy[1]) == pytest.approx(math.log(2), rel=1e-5)
    assert float(reg.coord_ce[0]) == pytest.approx(0.0, abs=1e-6)
    assert float(L.expectation_decode(z, 1.0)[1]) == pytest.approx(100 / 999, rel=1e-5)


def test_positive_entropy_weight_sharpens():
    z = torch.zeros(1, 1000)
    z[0, 10] = 1.0
    z.requires_grad_(True)
    reg = L.coord_regularizers(z, torch.tensor([10]), temperature=1.0, huber_delta=0.001)
    (1.0 * reg.entropy.sum()).backward()
    z2 = z.detach() - 10.0 * z.grad  # one descent step on +w*H with w > 0
    after = L.coord_regularizers(z2, torch.tensor([10]), temperature=1.0, huber_delta=0.001).entropy
    assert float(after[0]) < float(reg.entropy[0].detach())


def test_metric_keys():
    assert (L.LOSS_CE, L.LOSS_COORD, L.LOSS_COORD_PREFIX, L.LOSS_COORD_TAIL) == (
        "loss/ce",
        "loss/coord",
        "loss/coord_prefix",
        "loss/coord_tail",
    )
    assert (
        L.LOSS_BBOX_SMOOTHL1,
        L.LOSS_BBOX_CIOU,
        L.LOSS_COORD_CE,
        L.LOSS_COORD_EL1,
        L.LOSS_COORD_EHUBER,
        L.LOSS_COORD_ENTROPY,
    ) == (
        "loss/bbox_smoothl1",
        "loss/bbox_ciou",
        "loss/coord_ce",
        "loss/coord_el1",
        "loss/coord_ehuber",
        "loss/coord_entropy",
    )


def test_config_validation():
    with pytest.raises(ValueError, match="temperature_coord"):
        _cfg(temperature=0.0)
    with pytest.raises(ValueError, match="w1_weight"):
        _cfg(w1_weight=-1.0)


def test_empty_inputs_give_zero_sums_not_nan():
    logits = torch.randn(4, VOCAB, requires_grad=True)
    ce = L.token_ce(logits, torch.full((4,), L.IGNORE_INDEX))
    assert (float(ce.total.detach()), float(ce.weight)) == (0.0, 0.0)
    empty = torch.zeros(0, dtype=torch.long)
    out = L.coord_slot_losses(logits, empty, empty, COORD_IDS, cfg=_cfg())
    s = L.summarize_coord_loss(out.loss, torch.zeros(0, dtype=torch.bool))
    assert [float(x.detach()) for x in s] == [0.0, 0.0, 0.0, 0.0]
    (ce.total + s.total).backward()
    assert torch.isfinite(logits.grad).all()
