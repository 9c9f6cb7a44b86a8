"""The root ``Config`` and ``custom.*`` (data, prompts, coord loss, trainer variant, extra sections).

The canonical layout keeps the trainer sections under ``custom.extra`` as the user's runbooks do; the later
upstream layout (top-level ``rollout_matching:`` / ``stage2_ab:``) is accepted by the loader and moved here.
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob, section
from coordexp.config.schema_ab import Stage2ABConfig
from coordexp.config.schema_guard import StabilityGuardConfig
from coordexp.config.schema_model import ModelConfig, TunerConfig
from coordexp.config.schema_rollout import RolloutMatchingConfig
from coordexp.config.schema_training import TrainingConfig

TrainerVariant = Literal["rollout_matching_sft", "stage2_ab_training"]


@attrs.frozen
class CoordSoftCEW1Config:
    soft_ce_weight: float = knob(1.0, help="Weight of the soft CE against a Gaussian over coord bins (>= 0).")
    w1_weight: float = knob(1.0, help="Weight of the 1-D Wasserstein distance between CDFs (>= 0).")
    gate_weight: float = knob(1.0, help="Weight of -log(probability mass on the coord vocabulary) (>= 0).")
    temperature: float = knob(1.0, help="Softmax temperature over the coord logits (> 0).")
    target_sigma: float = knob(2.0, help="Gaussian target width in bins (> 0).")
    target_truncate: int | None = knob(None, help="Zero the target beyond this many bins from the GT bin (>= 0); null = no cut.")


@attrs.frozen
class ExtraConfig:
    rollout_matching: RolloutMatchingConfig | None = knob(
        None, help="Rollout, parse, match and decoding settings (required by both trainer variants)."
    )
    stage2_ab: Stage2ABConfig | None = knob(None, help="A/B schedule and channel settings (stage2_ab_training only).")
    stability_guard: StabilityGuardConfig = section(
        StabilityGuardConfig, help="Alarms on the live rollout metrics; warn, stop or back b_ratio off (both variants)."
    )


@attrs.frozen
class CustomConfig:
    trainer_variant: TrainerVariant = knob(
        help="`rollout_matching_sft`: every step is rollout-matching; `stage2_ab_training`: A/B mixture."
    )
    train_jsonl: str | None = knob(
        None,
        help="Training JSONL (images, objects, width, height; norm1000 coords), or `synthetic://shapes?n=N&seed=S` for "
        "generated shapes (coordexp.data.synthetic). Required.",
    )
    val_jsonl: str | None = knob(None, help="Validation JSONL (same contract); null = no evaluation.")
    train_sample_limit: int | None = knob(None, help="Keep only the first N training records.")
    val_sample_limit: int | None = knob(None, help="Keep only the first N validation records.")
    image_root: str | None = knob(
        None,
        help="Folder that relative image paths in the JSONL files resolve against; null = each JSONL file's own "
        "folder. A relative image_root is taken from the working directory.",
    )
    object_ordering: Literal["sorted", "random"] = knob(
        "sorted", help="GT object order: `sorted` top-to-bottom then left-to-right, `random` seeded shuffle per sample."
    )
    user_prompt: str | None = knob(None, help="User prompt text; null = coordexp's built-in prompt for object_ordering.")
    user_prompt_file: str | None = knob(None, help="File holding the user prompt (relative to the config file); excludes user_prompt.")
    system_prompt: str | None = knob(None, help="System prompt text; null = coordexp's built-in prompt.")
    system_prompt_file: str | None = knob(None, help="File holding the system prompt (relative to the config file); excludes system_prompt.")
    coord_soft_ce_w1: CoordSoftCEW1Config = section(CoordSoftCEW1Config, help="Coord-token distribution loss defaults.")
    extra: ExtraConfig = section(ExtraConfig, help="Trainer sections (also accepted at top level).")


@attrs.frozen
class Config:
    custom: CustomConfig = knob(help="Trainer variant, data, prompts, coord loss and the trainer sections.")
    model: ModelConfig = knob(help="The checkpoint to train.")
    global_max_length: int = knob(12000, help="Longest teacher-forced sequence in tokens; also the packing row length.")
    tuner: TunerConfig = section(TunerConfig, help="Which parameters train (LoRA/DoRA or full).")
    training: TrainingConfig = section(TrainingConfig, help="Optimisation, batching, packing, eval, checkpoints, logging.")

    @property
    def rollout_matching(self) -> RolloutMatchingConfig | None:
        return self.custom.extra.rollout_matching

    @property
    def stage2_ab(self) -> Stage2ABConfig | None:
        return self.custom.extra.stage2_ab

    @property
    def stability_guard(self) -> StabilityGuardConfig:
        return self.custom.extra.stability_guard
