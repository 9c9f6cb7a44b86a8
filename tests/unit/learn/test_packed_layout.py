"""Packed row layout (reference rollout 8.4), segment validation, encoding and the LR schedule."""

from __future__ import annotations

import pytest
import torch

from coordexp.config.schema_training import TrainingConfig
from coordexp.data.tiny import build_tiny_qwen3vl
from coordexp.errors import LossError, PackingError
from coordexp.learn.encode import encode_prompt, encode_teacher_forced
from coordexp.learn.losses import IGNORE_INDEX
from coordexp.learn.optim import LRFactor, build_optimizer, build_scheduler
from coordexp.learn.packed import (
    MODEL_INPUT_KEYS,
    Segment,
    pack_segments,
    pad_segments,
    segment_rope_positions,
)
from coordexp.learn.tiny_segments import tiny_segments


@pytest.fixture(scope="module")
def tiny():
    return build_tiny_qwen3vl(seed=0)


@pytest.fixture(scope="module")
def segments(tiny):
    return tiny_segments(tiny.processor, 3, seed=11, prefix_len=20)


def test_packed_row_layout(tiny, segments):
    row = pack_segments(segments, model=tiny.model)
    lengths = [s.length for s in segments]
    total = sum(lengths)
    pos = row.inputs["position_ids"]
    assert pos.shape == (4, 1, total) and "attention_mask" not in row.inputs
    assert row.inputs["input_ids"].shape == (1, total)
    start = 0
    for seg, n in zip(segments, lengths):
        assert torch.equal(pos[0, 0, start : start + n], torch.arange(n))  # text row restarts at 0
        assert torch.equal(pos[1:, 0, start : start + n], segment_rope_positions(tiny.model, seg))
        start += n
    assert torch.equal(row.inputs["image_grid_thw"], torch.cat([s.image_grid_thw for s in segments]))
    assert row.inputs["pixel_values"].shape[0] == sum(s.pixel_values.shape[0] for s in segments)
    offsets = [0, lengths[0], lengths[0] + lengths[1]]
    expected = torch.cat([s.coord_positions + o for s, o in zip(segments, offsets)])
    assert torch.equal(row.coord_positions, expected)
    assert row.ce_weight() == sum(float(s.ce_weights[s.labels != IGNORE_INDEX].sum()) for s in segments)
    assert row.cu_seqlens == (0, *offsets[1:], total)
    for a, b in zip(row.cu_seqlens, row.cu_seqlens[1:]):  # boundaries are exactly where row 0 restarts
        assert int(pos[0, 0, a]) == 0 and int(pos[0, 0, b - 1]) == b - a - 1


def test_packed_row_cap(tiny, segments):
    total = sum(s.length for s in segments)
    assert pack_segments(segments, model=tiny.model, cap=total).inputs["input_ids"].shape == (1, total)
    with pytest.raises(PackingError, match=rf"length {total} exceeds the cap {total - 1}\b"):
        pack_segments(segments, model=tiny.model, cap=total - 1)
    # Refused before the model is consulted: no positions are computed for a row that cannot be used.
    with pytest.raises(PackingError, match=f"cap {segments[0].length - 1}"):
        pack_segments(segments[:1], model=None, cap=segments[0].length - 1)
    with pytest.raises(PackingError, match="cap must be >= 1"):
        pack_segments(segments, model=None, cap=0)


def test_image_rows_have_2d_positions(tiny, segments):
    seg = segments[0]
    rope = segment_rope_positions(tiny.model, seg)
    image = seg.mm_token_type_ids == 1
    assert image.any() and not torch.equal(rope[1, image], rope[2, image])


def test_padded_batch_shapes(tiny, segments):
    batch = pad_segments(segments, pad_token_id=tiny.processor.tokenizer.pad_token_id)
    width = max(s.length for s in segments)
    assert batch.inputs["input_ids"].shape == (3, width)
    assert batch.inputs["attention_mask"].sum().item() == sum(s.length for s in segments)
    rows = torch.cat([torch.full_like(s.coord_positions, i) for i, s in enumerate(segments)])
    assert torch.equal(batch.coord_batch_index, rows) and torch.equal(batch.coord_positions, torch.cat([s.coord_positions for s in segments]))
    lengths = [s.length for s in segments]
    assert batch.cu_seqlens == (0, lengths[0], lengths[0] + lengths[1], sum(lengths))


def test_segment_rejects_a_label_on_its_first_token(segments):
    seg = segments[0]
    labels = seg.labels.clone()
    labels[0] = 5
    with pytest.raises(PackingError, match="first token"):
        Segment(**{**_fields(seg), "labels": labels})
    with pytest.raises(PackingError, match="coord positions"):
        Segment(**{**_fields(seg), "coord_positions": torch.full_like(seg.coord_positions, seg.length)})
    with pytest.raises(PackingError, match="zero segments"):
        pack_segments([], model=None)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
@pytest.mark.parametrize("field", ["ce_weights", "coord_weights"])
def test_segment_refuses_a_negative_or_non_finite_loss_weight(segments, field, bad):
    seg = segments[0]
    weights = getattr(seg, field).clone().float()
    weights[-1] = bad
    with pytest.raises(LossError, match=f"{field} has 1 value"):
        Segment(**{**_fields(seg), field: weights})


@pytest.mark.parametrize("key", ["labels", "past_key_values", "logits_to_keep", "channel"])
def test_a_batch_refuses_inputs_the_model_must_not_get(tiny, segments, key):
    import attrs

    row = pack_segments(segments[:1], model=tiny.model)
    with pytest.raises(PackingError, match=f"batch inputs hold \\['{key}'\\]"):
        attrs.evolve(row, inputs={**row.inputs, key: torch.zeros(1)})
    assert set(row.inputs) <= MODEL_INPUT_KEYS


def _fields(seg):
    import attrs

    return {f.name: getattr(seg, f.name) for f in attrs.fields(Segment)}


def test_teacher_forced_encoding_appends_answer_ids_verbatim(tiny):
    from PIL import Image

    proc = tiny.processor
    msgs = [{"role": "user", "content": [{"type": "image", "image": Image.new("RGB", (64, 32))}, {"type": "text", "text": "hi"}]}]
    prompt = encode_prompt(proc, msgs)
    y = [proc.tokenizer.convert_tokens_to_ids("<|coord_7|>"), proc.tokenizer.eos_token_id]
    enc = encode_teacher_forced(proc, msgs + [{"role": "assistant", "content": "ignored"}], y)
    assert enc.prompt_len == prompt.input_ids.numel()
    assert torch.equal(enc.input_ids[: enc.prompt_len], prompt.input_ids)
    assert enc.input_ids[enc.prompt_len :].tolist() == y
    assert enc.mm_token_type_ids[enc.prompt_len :].tolist() == [0, 0]
    assert int((enc.mm_token_type_ids == 1).sum()) == int(enc.image_grid_thw.prod() // 4)


def test_lr_schedules():
    cos = LRFactor(kind="cosine", warmup=2, total=10, min_ratio=0.0)
    assert [cos(s) for s in (0, 1, 2)] == [0.0, 0.5, 1.0]
    assert cos(6) == pytest.approx(0.5) and cos(10) == pytest.approx(0.0)
    lin = LRFactor(kind="linear", warmup=0, total=4, min_ratio=0.0)
    assert [lin(s) for s in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    floor = LRFactor(kind="cosine_with_min_lr", warmup=0, total=4, min_ratio=0.1)
    assert floor(4) == pytest.approx(0.1)
    assert LRFactor(kind="constant", warmup=0, total=4, min_ratio=0.0)(3) == 1.0


def test_optimizer_groups_and_scheduler_state_round_trip():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    training = TrainingConfig(learning_rate=0.1, weight_decay=0.01, lr_scheduler_type="linear", warmup_steps=1)
    opt = build_optimizer(model, training)
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.01]  # bias undecayed
    sched = build_scheduler(opt, training, total_steps=5)
    for _ in range(2):
        opt.step()
        sched.step()
    again = build_scheduler(build_optimizer(model, training), training, total_steps=5)
    again.load_state_dict(sched.state_dict())
    assert again.get_last_lr() == sched.get_last_lr()
