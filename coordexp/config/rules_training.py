"""Rules about batching, gradient accumulation, post-rollout packing, Channel-B execution and checkpoints."""

from __future__ import annotations

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived, channel_b_packing_mode
from coordexp.config.schema_root import Config

AB = "custom.extra.stage2_ab"


def packing(config: Config, _d: Derived, out: Findings) -> None:
    """Post-rollout packing never flushes leftovers and needs a real buffer and fill ratio."""
    t = config.training
    if not t.packing:
        return
    if not t.packing_drop_last:
        out.error("training.packing_drop_last", "must be true: post-rollout packing never flushes leftover segments "
                  "(in carry mode they wait for later packs; at the end of training they are dropped)",
                  "set training.packing_drop_last: true")
    if t.packing_buffer <= 0:
        out.error("training.packing_buffer", f"must be > 0 when packing, got {t.packing_buffer}", "use e.g. 512")
    if not 0.0 < t.packing_min_fill_ratio <= 1.0:
        out.error("training.packing_min_fill_ratio", f"must be in (0, 1], got {t.packing_min_fill_ratio}",
                  "use e.g. 0.65")


def ab_batch(config: Config, d: Derived, out: Findings) -> None:
    """AB needs effective_batch_size, divisible by per-device x world; accumulation is derived exactly."""
    t = config.training
    per_step = t.per_device_train_batch_size * d.world_size
    if config.custom.trainer_variant != "stage2_ab_training":
        return
    if t.effective_batch_size is None:
        out.error("training.effective_batch_size", "stage2_ab_training requires training.effective_batch_size",
                  f"set it to a multiple of per_device_train_batch_size x world size = {per_step}")
        return
    if per_step <= 0:
        return
    if t.effective_batch_size % per_step:
        out.error("training.effective_batch_size",
                  f"{t.effective_batch_size} must be divisible by per_device_train_batch_size "
                  f"({t.per_device_train_batch_size}) x world size ({d.world_size}, from {d.world_size_source}) "
                  f"= {per_step}", f"use a multiple of {per_step}")
        return
    derived = t.effective_batch_size // per_step
    if t.gradient_accumulation_steps is not None and t.gradient_accumulation_steps != derived:
        out.error("training.gradient_accumulation_steps",
                  f"{t.gradient_accumulation_steps} must not conflict with the value derived from "
                  f"effective_batch_size ({t.effective_batch_size} / {per_step} = {derived})",
                  "remove gradient_accumulation_steps (it is derived)")


def sft_batch(config: Config, d: Derived, out: Findings) -> None:
    """For rollout_matching_sft an explicit accumulation must agree with effective_batch_size when both are set."""
    t = config.training
    if config.custom.trainer_variant != "rollout_matching_sft":
        return
    if t.effective_batch_size is None or t.gradient_accumulation_steps is None:
        return
    covered = t.per_device_train_batch_size * d.world_size * t.gradient_accumulation_steps
    if covered < t.effective_batch_size:
        out.error("training.gradient_accumulation_steps",
                  f"{t.gradient_accumulation_steps} steps x {t.per_device_train_batch_size} per device x "
                  f"{d.world_size} ranks = {covered} < effective_batch_size {t.effective_batch_size}",
                  "remove gradient_accumulation_steps (it is derived) or raise it")


def channel_b_mode(config: Config, d: Derived, out: Findings) -> None:
    """Step-budgeted Channel-B packs a whole window: packing on and no partial windows."""
    ab = config.stage2_ab
    if ab is None or config.custom.trainer_variant != "stage2_ab_training" or ab.channel_b.mode != "step":
        return
    key = f"{AB}.channel_b.mode"
    if not config.training.packing:
        out.error(key, "`step` requires training.packing: true", "set training.packing: true (or channel_b.mode: micro)")
    if not config.training.dataloader_drop_last:
        out.error(key, "`step` requires training.dataloader_drop_last: true (no partial accumulation windows)",
                  "set training.dataloader_drop_last: true")
    rollouts = ab.channel_b.rollouts_per_step
    if rollouts is not None and rollouts < d.world_size:
        out.error(f"{AB}.channel_b.rollouts_per_step", f"{rollouts} is fewer than the {d.world_size} learner ranks",
                  f"use at least {d.world_size}")


def checkpoints(config: Config, _d: Derived, out: Findings) -> None:
    """Best-checkpoint selection needs an eval metric the rollout evaluator actually produces."""
    t = config.training
    if "token_acc" in t.metric_for_best_model:
        out.error("training.metric_for_best_model",
                  f"{t.metric_for_best_model!r} is a teacher-forced metric that rollout evaluation does not produce",
                  "use rollout/f1 with greater_is_better: true")
    if t.save_strategy == "best" and t.eval_strategy == "no":
        out.error("training.save_strategy", "`best` needs evaluation but training.eval_strategy is `no`",
                  "enable eval_strategy or use save_strategy: steps")


def packing_mode(config: Config, _d: Derived, out: Findings) -> None:
    """One switch per trainer: stage2_ab_training's packing scope is Channel-B's mode, so the two must agree."""
    mode = config.training.packing_mode
    if mode is None:
        return
    if not config.training.packing:
        out.warn("training.packing_mode", f"`{mode}` has no effect because training.packing is false",
                 "remove training.packing_mode or set training.packing: true")
        return
    implied = channel_b_packing_mode(config)
    if implied is not None and implied != mode:
        channel_b = config.stage2_ab.channel_b.mode
        out.error("training.packing_mode",
                  f"`{mode}` conflicts with {out.display(AB + '.channel_b.mode')} `{channel_b}`, which implies `{implied}`",
                  f"remove training.packing_mode (stage2_ab_training derives it from channel_b.mode) or set "
                  f"channel_b.mode: {'step' if mode == 'step' else 'micro'}")


def distributed(config: Config, _d: Derived, out: Findings) -> None:
    """coordexp scales the learner with DDP under torchrun; a DeepSpeed config would be silently ignored."""
    if config.training.deepspeed is not None:
        out.error("training.deepspeed", f"is {config.training.deepspeed!r}, but coordexp does not run DeepSpeed (the "
                  "learner scales with DDP under torchrun; FSDP is planned for large full fine-tunes)",
                  "set training.deepspeed: null and launch with `torchrun --nproc_per_node N -m coordexp.run ...`")


RULES = (packing, packing_mode, ab_batch, sft_batch, channel_b_mode, checkpoints, distributed)
