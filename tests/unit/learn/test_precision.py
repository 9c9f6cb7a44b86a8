"""Mixed precision: bf16 compute over fp32 trainable weights and optimizer state; LoRA fp32 on a bf16 base."""

from __future__ import annotations

import pytest
import torch

from coordexp.config.schema_model import TunerConfig
from coordexp.config.schema_training import TrainingConfig
from coordexp.errors import ConfigError
from coordexp.learn.learner import Learner
from coordexp.learn.losses import CoordLossConfig
from coordexp.learn.model import load_model
from coordexp.learn.packed import pack_segments
from coordexp.learn.tiny_segments import tiny_segments

COORD = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0, gate_weight=1.0)
LR = 1e-6  # AdamW's first step moves each weight by ~lr: far below bf16's resolution at |w| ~ 0.1


def _learner(tuner: TunerConfig, *, bf16: bool = True, lr: float = LR):
    loaded = load_model("tiny", dtype="bfloat16", tuner_cfg=tuner, attn_impl="packed")
    training = TrainingConfig(learning_rate=lr, lr_scheduler_type="constant", gradient_checkpointing=False, bf16=bf16)
    learner = Learner(loaded.model, training=training, coord_cfg=COORD, coord_ids=loaded.coord_ids, total_steps=4)
    return learner, loaded


def _dtypes(model, trainable: bool) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters() if p.requires_grad is trainable}


def _step(learner, processor):
    segments = tiny_segments(processor, 3, seed=1, prefix_len=20)
    return learner.step([pack_segments(segments, model=learner.model)])


def test_full_fine_tuning_keeps_updates_below_bf16_resolution():
    learner, loaded = _learner(TunerConfig(train_type="full"))
    model = learner.model
    assert learner.upcast_params > 0
    assert _dtypes(model, trainable=True) == {torch.float32}
    assert _dtypes(model, trainable=False) == {torch.bfloat16}  # the frozen vision tower stays bf16
    name, weight = next((n, p) for n, p in model.named_parameters() if n.endswith("layers.0.mlp.up_proj.weight"))
    before = weight.detach().clone()
    stats = _step(learner, loaded.processor)
    assert stats.grad_norm > 0
    delta = weight.detach() - before
    sized = before.abs() > 1e-3  # where half a bf16 ulp (>= 3.8e-6) exceeds the ~lr move
    assert sized.float().mean() > 0.9
    moved = (delta != 0) & sized
    # The fp32 master weight kept the update for most weights ...
    assert moved.float().sum() > 0.5 * sized.float().sum(), f"{name}: most weights must move"
    # ... although every one of those moves is below bf16 resolution: on the bf16 weight it would round away.
    bf16_weight = before.to(torch.bfloat16)
    assert torch.equal((bf16_weight.float() + delta)[sized].to(torch.bfloat16), bf16_weight[sized])
    states = [s for s in learner.optimizer.state.values() if s]
    assert states and all(s["exp_avg"].dtype == s["exp_avg_sq"].dtype == torch.float32 for s in states)


def test_a_bf16_weight_under_adamw_loses_the_same_update():
    """What the fp32 master prevents: AdamW on the bf16 weight itself leaves it unchanged."""
    w = torch.nn.Parameter(torch.full((64,), 0.1, dtype=torch.bfloat16))
    w.grad = torch.ones_like(w)
    torch.optim.AdamW([w], lr=LR, weight_decay=0.0).step()
    assert torch.equal(w.detach(), torch.full((64,), 0.1, dtype=torch.bfloat16))


def test_lora_adapters_stay_fp32_on_a_bf16_base():
    learner, loaded = _learner(TunerConfig(train_type="lora", lora_rank=4, lora_alpha=8, lora_dropout=0.0), lr=1e-2)
    model = learner.model
    trainable = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trainable) and _dtypes(model, trainable=True) == {torch.float32}
    assert _dtypes(model, trainable=False) == {torch.bfloat16}
    before = {n: p.detach().clone() for n, p in trainable.items()}
    stats = _step(learner, loaded.processor)
    assert torch.isfinite(torch.tensor([stats.loss, stats.grad_norm])).all()
    assert any("lora_B" in n and not torch.equal(p, before[n]) for n, p in trainable.items())


def test_bf16_trainable_weights_without_autocast_are_refused():
    with pytest.raises(ConfigError, match="training.bf16 is false but .* trainable parameters are torch.bfloat16"):
        _learner(TunerConfig(train_type="full"), bf16=False)
