"""The learner on the tiny Qwen3-VL: training moves the loss, steps normalise over packs, resume is exact."""

from __future__ import annotations

import pytest
import torch

from coordexp.config.schema_model import TunerConfig
from coordexp.config.schema_training import TrainingConfig
from coordexp.learn.checkpoint import load_checkpoint, save_checkpoint
from coordexp.learn.learner import Learner, StepStats
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import load_model
from coordexp.learn.packed import pack_segments
from coordexp.learn.tiny_segments import tiny_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)


def _training(**overrides) -> TrainingConfig:
    base = dict(learning_rate=2e-2, lr_scheduler_type="constant", gradient_checkpointing=False, bf16=False)
    return TrainingConfig(**{**base, **overrides})


def _learner(tuner: TunerConfig, training: TrainingConfig, total_steps: int = 20):
    torch.manual_seed(0)  # PEFT draws lora_A from the global RNG: same seed, same adapters
    loaded = load_model("tiny", dtype="float32", tuner_cfg=tuner, attn_impl="packed")
    learner = Learner(
        loaded.model, training=training, coord_cfg=COORD, coord_ids=loaded.coord_ids, total_steps=total_steps
    )
    return learner, loaded


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
