"""A packed row trains exactly like its segments run one by one: same loss, same gradients.

Segments differ in length, each has its own image of its own size (so its own image-token count and
M-RoPE grid), and one carries rollout-prefix coord slots. Run for every attention path present on
the machine, for both tiny Qwen3-VL and Qwen2.5-VL: on CPU in float32 with transformers' sdpa and
eager (dense block-diagonal mask) and coordexp's packed attention (``packed`` resolves to per-segment
SDPA here); on CUDA (marked ``gpu``) with sdpa and every packed kernel installed, the flash ones
under bf16 autocast with bf16 tolerances. The Stage-2 AB objective (Channel A's soft self-context forwards
and the geometry terms over the segments' boxes) is checked the same way on CPU.
"""

from __future__ import annotations

import contextlib
import copy

import attrs
import pytest
import torch

from coordexp.data.tiny import build_tiny_qwen2_5vl, build_tiny_qwen3vl
from coordexp.learn.attention import (
    KERNEL_CALLS,
    PACKED,
    PACKED_FA_VARLEN,
    PACKED_IMPLS,
    PACKED_SDPA,
    PACKED_TORCH_VARLEN,
    attn_implementation_for,
    kernel_available,
    resolve_kernel,
)
from coordexp.learn.channel_a import SoftContextConfig
from coordexp.learn.geometry_losses import GeometryLossConfig
from coordexp.learn.learner import backward_packs, forward_loss_sums, step_weights
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import coord_ids_tensor, coord_token_ids
from coordexp.learn.packed import pack_segments, pad_segments
from coordexp.learn.tiny_segments import tiny_segments

CFG = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
BUILDERS = {"qwen3_vl": build_tiny_qwen3vl, "qwen2_5_vl": build_tiny_qwen2_5vl}
FLASH = (PACKED_TORCH_VARLEN, PACKED_FA_VARLEN)
GEOMETRY = GeometryLossConfig(smoothl1_weight=2.0, ciou_weight=1.0, coord_ce_weight=0.1, el1_weight=0.2,
                              ehuber_weight=0.3, huber_delta=0.01, entropy_weight=0.05, temperature=0.7)


def _cuda(attn):
    """A CUDA path: present when CUDA is, and for a flash kernel when it is installed."""
    present = torch.cuda.is_available() and (attn not in FLASH or kernel_available(attn, "cuda", torch.bfloat16))
    return pytest.param(
        "cuda", attn, marks=[pytest.mark.gpu, pytest.mark.skipif(not present, reason=f"{attn} on CUDA is absent here")]
    )


PATHS = [
    ("cpu", "sdpa"),
    ("cpu", "eager"),
    ("cpu", PACKED),
    ("cpu", PACKED_SDPA),
    _cuda("sdpa"),
    _cuda(PACKED),
    _cuda(PACKED_SDPA),
    _cuda(PACKED_TORCH_VARLEN),
    _cuda(PACKED_FA_VARLEN),
]


def _loss_and_grads(model, batches, coord_ids, **ab):
    """Step-normalised loss over ``batches`` (the learner's own code path) and the gradients."""
    total = backward_packs(model, batches, coord_ids=coord_ids, coord_cfg=CFG, **ab)
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    return total, grads


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def tiny(request):
    return BUILDERS[request.param](seed=0)


def _half(device: str, attn: str) -> torch.dtype | None:
    """bf16 where the path needs half precision (flash kernels; ``packed`` on CUDA picks one), else None."""
    return torch.bfloat16 if device == "cuda" and attn in (PACKED, *FLASH) else None


@pytest.mark.parametrize(("device", "attn"), PATHS)
def test_packed_row_matches_segments_one_by_one(tiny, device, attn):
    processor = tiny.processor
    model = tiny.model if device == "cpu" else copy.deepcopy(tiny.model).to(device)
    model.set_attn_implementation(attn_implementation_for(attn))
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer), device=torch.device(device))
    segments = tiny_segments(processor, 4, seed=11, prefix_len=20)
    assert len({s.length for s in segments}) == 4, "segments must differ in length"
    assert len({tuple(s.image_grid_thw[0].tolist()) for s in segments}) > 1, "images must differ in size"
    assert any(bool(s.coord_is_prefix.any()) for s in segments)

    packed = pack_segments(segments, model=tiny.model).to(torch.device(device))
    weights = step_weights([packed])
    assert weights.ce > 0 and weights.coord > 0
    half = _half(device, attn)
    kernel = resolve_kernel(attn, device, half) if attn in PACKED_IMPLS else None
    with torch.autocast("cuda", dtype=torch.bfloat16) if half else contextlib.nullcontext():
        before = KERNEL_CALLS[kernel]
        loss_packed, grads_packed = _loss_and_grads(model, [packed], coord_ids)
        singles = [pack_segments([s], model=tiny.model).to(torch.device(device)) for s in segments]
        assert step_weights(singles) == weights  # both runs are normalised by the same step totals
        loss_single, grads_single = _loss_and_grads(model, singles, coord_ids)
    if kernel is not None:  # the packed kernel ran (once per text layer, forward only), not a fallback
        assert KERNEL_CALLS[kernel] - before == model.config.text_config.num_hidden_layers

    assert abs(loss_packed - loss_single) <= (2e-2 * abs(loss_single) if half else 1e-5)
    assert grads_packed.keys() == grads_single.keys()
    assert any(name for name in grads_packed if ".visual." in f".{name}"), "vision tower must get gradients"
    for name, g in grads_packed.items():
        ref = grads_single[name]
        if half:
            assert float((g - ref).norm()) <= 5e-2 * float(ref.norm()) + 1e-4, name
        else:
            torch.testing.assert_close(g, ref, atol=1e-5, rtol=0.0, msg=name)


@pytest.mark.parametrize("attn", ["sdpa", PACKED])
@pytest.mark.parametrize(("n_iter", "grad_mode", "embed_mode"), [(2, "unroll", "soft"), (3, "em_detach", "st")])
def test_ab_objective_packed_row_matches_segments_one_by_one(tiny, attn, n_iter, grad_mode, embed_mode):
    """Soft self-context forwards + geometry: a packed row gives the loss and gradients of its segments alone.

    In float64: the soft context chains forwards, so float32 summation-order noise grows to ~1e-4 relative in
    the vision tower's gradients, which would hide a real (small) leak; in float64 they agree to ~1e-9.
    """
    model, processor = copy.deepcopy(tiny.model).double(), tiny.processor
    model.set_attn_implementation(attn_implementation_for(attn))
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = [attrs.evolve(s, pixel_values=s.pixel_values.double()) if s.pixel_values is not None else s
                for s in tiny_segments(processor, 3, seed=11, max_objects=3, boxes=True)]
    assert sum(s.box_slots.shape[0] > 0 for s in segments) >= 2  # (a sample without objects has none)
    ab = {"geometry": GEOMETRY, "soft_context": SoftContextConfig(n_iter, grad_mode, 0.7, embed_mode)}
    packed = pack_segments(segments, model=model)
    assert step_weights([packed]).box == sum(s.box_slots.shape[0] for s in segments)
    loss_packed, grads_packed = _loss_and_grads(model, [packed], coord_ids, **ab)
    loss_single, grads_single = _loss_and_grads(model, [pack_segments([s], model=model) for s in segments],
                                                coord_ids, **ab)
    padded = pad_segments(segments, pad_token_id=processor.tokenizer.pad_token_id)
    loss_padded, _ = _loss_and_grads(model, [padded], coord_ids, **ab)
    plain, _ = _loss_and_grads(model, [packed], coord_ids)
    assert abs(loss_packed - plain) > 1e-3, "the AB terms must change the objective (else this test is vacuous)"
    assert abs(loss_packed - loss_single) <= 1e-5 and abs(loss_packed - loss_padded) <= 1e-5
    assert grads_packed.keys() == grads_single.keys()
    for name, g in grads_packed.items():
        ref = grads_single[name]
        assert float((g - ref).norm()) <= 1e-7 * float(ref.norm()) + 1e-9, name


def test_cross_segment_attention_would_change_the_loss(tiny):
    """Guard against a vacuous pass: the same row read as ONE sequence gives a different loss.

    Under ``packed`` the batch's segment bounds (passed to the attention) separate the segments even
    when the positions are glued: RoPE is relative, so only what a token attends to changes a loss.
    """
    model, processor = tiny.model, tiny.processor
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = tiny_segments(processor, 3, seed=4)
    packed = pack_segments(segments, model=model)
    glued = dict(packed.inputs)
    glued["position_ids"] = None  # positions 0..L-1: one causal sequence over all segments
    ce = {}
    for attn in ("sdpa", PACKED):
        model.set_attn_implementation(attn_implementation_for(attn))
        with torch.no_grad():
            for name, batch in (("good", packed), ("glued", _with_inputs(packed, glued))):
                ce[attn, name] = float(forward_loss_sums(model, batch, coord_ids=coord_ids, coord_cfg=CFG).ce_sum)
    assert abs(ce["sdpa", "good"] - ce["sdpa", "glued"]) > 1e-3
    assert ce[PACKED, "good"] == pytest.approx(ce["sdpa", "good"], rel=1e-6)  # ce is a sum over ~100 tokens
    assert ce[PACKED, "glued"] == pytest.approx(ce[PACKED, "good"], rel=1e-6)


@pytest.mark.parametrize("attn", ["sdpa", PACKED])
def test_padded_batch_matches_packed_row(tiny, attn):
    model, processor = tiny.model, tiny.processor
    model.set_attn_implementation(attn_implementation_for(attn))
    coord_ids = coord_ids_tensor(coord_token_ids(processor.tokenizer))
    segments = tiny_segments(processor, 3, seed=5, prefix_len=4)
    packed = pack_segments(segments, model=model)
    padded = pad_segments(segments, pad_token_id=processor.tokenizer.pad_token_id)
    assert padded.ce_weight() == packed.ce_weight() and padded.coord_weight() == packed.coord_weight()
    loss_packed, _ = _loss_and_grads(model, [packed], coord_ids)
    loss_padded, _ = _loss_and_grads(model, [padded], coord_ids)
    assert abs(loss_packed - loss_padded) <= 1e-5


def _with_inputs(batch, inputs):
    return attrs.evolve(batch, inputs={k: v for k, v in inputs.items() if v is not None})
