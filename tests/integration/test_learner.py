"""The learner on the tiny Qwen3-VL: training moves the loss, steps normalise over packs, resume is exact."""

from __future__ import annotations

import pytest
import torch

from coordexp.config.schema_model import TunerConfig
from coordexp.config.schema_training import TrainingConfig
from coordexp.core.schedule import Channel
from coordexp.learn.channel_a import SoftContextConfig
from coordexp.learn.checkpoint import load_checkpoint, save_checkpoint
from coordexp.learn.geometry_losses import GeometryLossConfig
from coordexp.learn.learner import Learner, StepStats
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import load_model
from coordexp.learn.packed import pack_segments
from coordexp.learn.tiny_segments import tiny_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)


def _training(**overrides) -> TrainingConfig:
    base = dict(learning_rate=2e-2, lr_scheduler_type="constant", gradient_checkpointing=False, bf16=False)
    return TrainingConfig(**{**base, **overrides})


def _learner(tuner: TunerConfig, training: TrainingConfig, total_steps: int = 20, **ab):
    torch.manual_seed(0)  # PEFT draws lora_A from the global RNG: same seed, same adapters
    loaded = load_model("tiny", dtype="float32", tuner_cfg=tuner, attn_impl="packed")
    learner = Learner(
        loaded.model, training=training, coord_cfg=COORD, coord_ids=loaded.coord_ids, total_steps=total_steps, **ab
    )
    return learner, loaded


def _geometry(**weights) -> GeometryLossConfig:
    base = dict(smoothl1_weight=0.0, ciou_weight=0.0, coord_ce_weight=0.0, el1_weight=0.0, ehuber_weight=0.0,
                huber_delta=0.001, entropy_weight=0.0, temperature=1.0)
    return GeometryLossConfig(**{**base, **weights})


LORA = TunerConfig(lora_rank=16, lora_alpha=32, lora_dropout=0.0)  # deterministic comparisons


def _packs(learner, processor, n=2, per_pack=1, seed=1):
    segments = tiny_segments(processor, n, seed=seed, prefix_len=20)
    return [pack_segments(segments[i : i + per_pack], model=learner.model) for i in range(0, n, per_pack)]


def _run(learner, packs, steps) -> list[StepStats]:
    return [learner.step(packs) for _ in range(steps)]


def test_lora_training_drives_the_loss_down():
    learner, loaded = _learner(LORA, _training())
    stats = _run(learner, _packs(learner, loaded.processor), 20)
    losses = [s.loss for s in stats]
    assert all(s.n_packs == 2 and s.n_segments == 2 for s in stats)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses
    assert stats[-1].ce < stats[0].ce
    assert all(torch.isfinite(torch.tensor([s.grad_norm for s in stats])))


def test_step_loss_is_token_weighted_over_all_packs():
    """Splitting the same segments into more packs changes neither the loss nor the update."""
    one, loaded = _learner(LORA, _training())
    two, _ = _learner(LORA, _training())
    segments = tiny_segments(loaded.processor, 3, seed=2, prefix_len=20)
    a = one.step([pack_segments(segments, model=one.model)])
    b = two.step([pack_segments(segments[:1], model=two.model), pack_segments(segments[1:], model=two.model)])
    assert (a.n_packs, b.n_packs) == (1, 2)
    assert a.loss == pytest.approx(b.loss, abs=1e-5)
    assert a.ce_tokens == b.ce_tokens and a.coord_slots == b.coord_slots
    assert a.coord_prefix > 0 and a.coord_tail > 0
    for (name, p), (_, q) in zip(one.model.named_parameters(), two.model.named_parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p, q, atol=1e-5, rtol=0.0, msg=name)


@pytest.mark.parametrize("train_type", ["lora", "full"])
def test_resume_gives_the_identical_next_step_loss(tmp_path, train_type):
    tuner = TunerConfig(train_type=train_type, lora_rank=8, lora_alpha=16, lora_dropout=0.1)
    training = _training(learning_rate=1e-2, lr_scheduler_type="cosine", warmup_steps=2)
    first, loaded = _learner(tuner, training, total_steps=10)
    packs = _packs(first, loaded.processor)
    _run(first, packs, 3)
    save_checkpoint(first, tmp_path / "ckpt")
    expected = first.step(packs)

    resumed, _ = _learner(tuner, training, total_steps=10)
    torch.manual_seed(12345)  # a different RNG stream: the checkpoint must restore it
    load_checkpoint(resumed, tmp_path / "ckpt")
    assert resumed.global_step == 3
    got = resumed.step(packs)
    assert got.loss == expected.loss
    assert got.lr == expected.lr
    assert got.grad_norm == expected.grad_norm
    saved = {p.name for p in (tmp_path / "ckpt").rglob("*") if p.is_file()}
    if train_type == "lora":
        assert "adapter_model.safetensors" in saved and "model.safetensors" not in saved
    else:
        assert "model.safetensors" in saved


def test_dora_wraps_and_trains_a_step():
    learner, loaded = _learner(TunerConfig(lora_rank=4, lora_alpha=8, use_dora=True), _training())
    names = [n for n, p in learner.model.named_parameters() if p.requires_grad]
    assert any("lora_magnitude_vector" in n for n in names)
    before = {n: p.detach().clone() for n, p in learner.model.named_parameters() if p.requires_grad}
    stats = learner.step(_packs(learner, loaded.processor))
    assert stats.loss > 0 and stats.grad_norm > 0
    changed = [n for n, p in learner.model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any("lora_magnitude_vector" in n for n in changed)


def test_bf16_autocast_step_runs_on_cpu():
    learner, loaded = _learner(LORA, _training(bf16=True))
    stats = learner.step(_packs(learner, loaded.processor))
    assert torch.isfinite(torch.tensor([stats.loss, stats.grad_norm])).all()
    assert stats.loss > 0


def test_gradient_checkpointing_gives_the_same_step():
    plain, loaded = _learner(LORA, _training())
    ckpt, _ = _learner(LORA, _training(gradient_checkpointing=True))
    packs = _packs(plain, loaded.processor)
    assert plain.step(packs).loss == pytest.approx(ckpt.step(packs).loss, abs=1e-6)
    assert plain.step(packs).loss == pytest.approx(ckpt.step(packs).loss, abs=1e-5)


def test_step_without_packs_is_an_error():
    from coordexp.errors import PackingError

    learner, _ = _learner(LORA, _training())
    with pytest.raises(PackingError, match="at least one pack"):
        learner.step([])


def test_channel_a_with_one_forward_and_no_geometry_is_todays_step():
    """n_softctx_iter 1 and every geometry weight 0: exactly the plain teacher-forcing step, bit for bit."""
    plain, loaded = _learner(LORA, _training())
    ab, _ = _learner(LORA, _training(), geometry=_geometry(), soft_context=SoftContextConfig(1, "unroll", 1.0, "soft"))
    segments = tiny_segments(loaded.processor, 2, seed=3, boxes=True)
    for _ in range(2):
        a = plain.step([pack_segments(segments, model=plain.model)])
        b = ab.step([pack_segments(segments, model=ab.model)], channel=Channel.A)
        assert (a.loss, a.ce, a.coord, a.grad_norm) == (b.loss, b.ce, b.coord, b.grad_norm)
    assert a.geometry is None and b.geometry is not None and b.geometry["loss/bbox_smoothl1"] > 0
    for (name, p), (_, q) in zip(plain.model.named_parameters(), ab.model.named_parameters()):
        assert torch.equal(p, q), name


def test_step_objective_with_geometry_is_one_formula_over_all_packs():
    """loss = ce + coord + sum_t w_t * term_t (step means), and splitting packs changes neither it nor the update."""
    geo = _geometry(smoothl1_weight=2.0, ciou_weight=1.0, coord_ce_weight=0.1, el1_weight=0.5, entropy_weight=0.01)
    soft = SoftContextConfig(2, "unroll", 1.0, "soft")
    one, loaded = _learner(LORA, _training(), geometry=geo, soft_context=soft)
    two, _ = _learner(LORA, _training(), geometry=geo, soft_context=soft)
    segments = tiny_segments(loaded.processor, 3, seed=2, boxes=True)
    boxes = sum(s.box_slots.shape[0] for s in segments)
    assert boxes >= 2 and sum(s.box_slots.shape[0] > 0 for s in segments) >= 2
    a = one.step([pack_segments(segments, model=one.model)], channel=Channel.A)
    b = two.step([pack_segments(segments[:1], model=two.model), pack_segments(segments[1:], model=two.model)],
                 channel=Channel.A)
    assert a.loss == pytest.approx(b.loss, abs=1e-5)
    for key in a.geometry:
        assert a.geometry[key] == pytest.approx(b.geometry[key], abs=1e-5), key
    g = a.geometry
    weighted = 2.0 * g["loss/bbox_smoothl1"] + 1.0 * g["loss/bbox_ciou"] + g["loss/coord_reg"]
    assert g["loss/coord_reg"] == pytest.approx(0.1 * g["loss/coord_ce"] + 0.5 * g["loss/coord_el1"]
                                                + 0.01 * g["loss/coord_entropy"], rel=1e-6)
    assert a.loss == pytest.approx(a.ce + a.coord + weighted, rel=1e-6)
    assert g["loss/bbox_nonfinite"] == 0 and a.metrics()["loss/bbox_ciou"] == g["loss/bbox_ciou"]
    # gradients: equal up to float32 noise (test_packed_equivalence checks them tightly, in float64); AdamW's
    # first update is ~lr * sign(grad), so comparing updated weights would only test that noise
    assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4)


def test_soft_context_runs_only_on_channel_a_steps():
    """The same packs: a Channel-B step is one plain forward, a Channel-A step the soft self-context."""
    soft = SoftContextConfig(2, "unroll", 1.0, "soft")
    first, loaded = _learner(LORA, _training(), soft_context=soft)
    learners = [first, _learner(LORA, _training(), soft_context=soft)[0], _learner(LORA, _training())[0]]
    calls = []
    for learner in learners:
        learner.model.register_forward_pre_hook(lambda *_: calls.append(1))
    packs = _packs(first, loaded.processor)
    a = learners[0].step(packs, channel=Channel.A)
    n_a = len(calls)
    b = learners[1].step(packs, channel=Channel.B)
    plain = learners[2].step(packs)
    soft_forwards = sum(2 if p.coord_positions.numel() else 1 for p in packs)  # no coord slot: nothing to feed back
    assert soft_forwards > len(packs) and n_a == soft_forwards and len(calls) == soft_forwards + 2 * len(packs)
    assert (b.loss, b.grad_norm) == (plain.loss, plain.grad_norm) and a.loss != b.loss
