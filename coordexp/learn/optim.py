"""AdamW and the learning-rate schedule, from ``training.*``.

Parameter groups follow the model's parts: the vision tower uses ``training.vit_lr``, the aligner
``training.aligner_lr`` (each falling back to ``learning_rate`` when null), everything else
``learning_rate``. Weight decay applies to matrices only; decaying norms, biases and DoRA magnitude
vectors pulls them towards zero, which is not regularisation but damage.

The schedule is a ``LambdaLR`` over a small callable object rather than a closure, so its state
survives ``state_dict()`` / ``load_state_dict()`` in a checkpoint.
"""

from __future__ import annotations

import math

import attrs
import torch

from coordexp.config.schema_training import TrainingConfig
from coordexp.errors import ConfigError
from coordexp.learn.tuner import ALIGNER, VISION, part_of, trainable_parameters

# Config keys this module reads (checked by the key-reach test, coordexp.bind.reach).
CONFIG_READS = (
    "training.learning_rate",
    "training.vit_lr",
    "training.aligner_lr",
    "training.weight_decay",
    "training.warmup_steps",
    "training.warmup_ratio",
    "training.lr_scheduler_type",
    "training.min_learning_rate",
)


def _group_lr(part: str, training: TrainingConfig) -> float:
    if part == VISION and training.vit_lr is not None:
        return training.vit_lr
    if part == ALIGNER and training.aligner_lr is not None:
        return training.aligner_lr
    return training.learning_rate


def build_optimizer(model: torch.nn.Module, training: TrainingConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters, grouped by (learning rate, decay)."""
    groups: dict[tuple[float, float], list[torch.nn.Parameter]] = {}
    for name, p in trainable_parameters(model):
        decay = training.weight_decay if p.ndim >= 2 else 0.0
        groups.setdefault((_group_lr(part_of(name), training), decay), []).append(p)
    if not groups:
        raise ConfigError("no trainable parameters: check tuner.train_type and the tuner.freeze_* flags")
    param_groups = [{"params": ps, "lr": lr, "weight_decay": wd} for (lr, wd), ps in groups.items()]
    return torch.optim.AdamW(param_groups, lr=training.learning_rate)


def warmup_steps(training: TrainingConfig, total_steps: int) -> int:
    """``warmup_steps`` when > 0, else ``ceil(warmup_ratio * total_steps)``."""
    if training.warmup_steps > 0:
        return training.warmup_steps
    return math.ceil(training.warmup_ratio * total_steps)


@attrs.define(slots=False)  # LambdaLR checkpoints a callable object through its __dict__
class LRFactor:
    """Multiplier of each group's base learning rate at a scheduler step (HF-compatible shapes).

    Warmup ramps linearly from 0; then ``constant`` stays at 1, ``linear`` decays to 0 at
    ``total``, ``cosine`` follows half a cosine to 0, ``cosine_with_min_lr`` to ``min_ratio``.
    """

    kind: str
    warmup: int
    total: int
    min_ratio: float

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return step / max(1, self.warmup)
        if self.kind == "constant":
            return 1.0
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        if self.kind == "linear":
            return 1.0 - progress
        cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.min_ratio + (1.0 - self.min_ratio) * cosine


def _min_ratio(training: TrainingConfig) -> float:
    if training.lr_scheduler_type != "cosine_with_min_lr":
        return 0.0
    if training.min_learning_rate is None:
        raise ConfigError("training.lr_scheduler_type cosine_with_min_lr needs training.min_learning_rate")
    return training.min_learning_rate / training.learning_rate


def build_scheduler(
    optimizer: torch.optim.Optimizer, training: TrainingConfig, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule over ``total_steps`` optimizer steps (``training.max_steps`` or the epoch count)."""
    if total_steps <= 0:
        raise ConfigError(f"the learning-rate schedule needs total_steps > 0, got {total_steps}")
    factor = LRFactor(
        kind=training.lr_scheduler_type,
        warmup=warmup_steps(training, total_steps),
        total=total_steps,
        min_ratio=_min_ratio(training),
    )
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
