"""A packed row trains exactly like its segments run one by one: same loss, same gradients.

Segments differ in length, each has its own image of its own size (so its own image-token count and
M-RoPE grid), and one carries rollout-prefix coord slots. Run on CPU in float32 with sdpa and eager
attention, for both tiny Qwen3-VL and Qwen2.5-VL.
"""

from __future__ import annotations

import pytest
import torch

from coordexp.data.tiny import build_tiny_qwen2_5vl, build_tiny_qwen3vl, tiny_segments
from coordexp.learn.learner import backward_packs, forward_loss_sums, step_weights
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import coord_ids_tensor, coord_token_ids
from coordexp.learn.packed import pack_segments, pad_segments

CFG = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
BUILDERS = {"qwen3_vl": build_tiny_qwen3vl, "qwen2_5_vl": build_tiny_qwen2_5vl}


def _loss_and_grads(model, batches, coord_ids):
    """Step-normalised loss over ``batches`` (the learner's own code path) and the gradients."""
    total = backward_packs(model, batches, coord_ids=coord_ids, coord_cfg=CFG)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return total, grads


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny(request):
    return BUILDERS[request.param](seed=0)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_row_matches_segments_one_by_one(tiny, attn):
    model, processor = tiny.model, tiny.processor
    model.set_attn_implementation(attn)
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = tiny_segments(processor, 4, seed=11, prefix_len=20)
    assert len({s.length for s in segments}) == 4, "segments must differ in length"
    assert len({tuple(s.image_grid_thw[0].tolist()) for s in segments}) > 1, "images must differ in size"
    assert any(bool(s.coord_is_prefix.any()) for s in segments)

    packed = pack_segments(segments, model=model)
    weights = (packed.ce_weight(), packed.coord_weight())
    assert weights[0] > 0 and weights[1] > 0
    loss_packed, grads_packed = _loss_and_grads(model, [packed], coord_ids)
    singles = [pack_segments([s], model=model) for s in segments]
    assert step_weights(singles) == weights  # both runs are normalised by the same step totals
    loss_single, grads_single = _loss_and_grads(model, singles, coord_ids)

    assert abs(loss_packed - loss_single) <= 1e-5
    assert grads_packed.keys() == grads_single.keys()
    assert any(name for name in grads_packed if ".visual." in f".{name}"), "vision tower must get gradients"
    for name, g in grads_packed.items():
        torch.testing.assert_close(g, grads_single[name], atol=1e-5, rtol=0.0, msg=name)


def test_cross_segment_attention_would_change_the_loss(tiny):
    """Guard against a vacuous pass: the same row read as ONE sequence gives a different loss."""
    model, processor = tiny.model, tiny.processor
    model.set_attn_implementation("sdpa")
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = tiny_segments(processor, 3, seed=4)
    packed = pack_segments(segments, model=model)
    glued = dict(packed.inputs)
    glued["position_ids"] = None  # positions 0..L-1: one causal sequence over all segments
    with torch.no_grad():
        good = forward_loss_sums(model, packed, coord_ids=coord_ids, coord_cfg=CFG)
        bad = forward_loss_sums(model, _with_inputs(packed, glued), coord_ids=coord_ids, coord_cfg=CFG)
    assert abs(float(good.ce_sum) - float(bad.ce_sum)) > 1e-3


def test_padded_batch_matches_packed_row(tiny):
    model, processor = tiny.model, tiny.processor
    model.set_attn_implementation("sdpa")
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = tiny_segments(processor, 3, seed=5, prefix_len=4)
    packed = pack_segments(segments, model=model)
    padded = pad_segments(segments, pad_token_id=processor.tokenizer.pad_token_id)
    assert padded.ce_weight() == packed.ce_weight() and padded.coord_weight() == packed.coord_weight()
    loss_packed, _ = _loss_and_grads(model, [packed], coord_ids)
    loss_padded, _ = _loss_and_grads(model, [padded], coord_ids)
    assert abs(loss_packed - loss_padded) <= 1e-5


def _with_inputs(batch, inputs):
    import attrs

    return attrs.evolve(batch, inputs={k: v for k, v in inputs.items() if v is not None})
