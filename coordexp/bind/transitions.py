"""The records of the pure transitions and the learner, each built from the resolved config in one function.

This module is the only place that reads a config section into a core record, so the rule "which key feeds
which knob" is written once: the executor, the dry-run plan, the spec runners, ``inspect`` and ``bench`` all
call these functions instead of copying values. The records themselves carry no defaults; every default
lives in the schema (``coordexp/config/schema_*.py``).

Rules that are not in the schema because they follow from the trainer variant live here too:

- BuildTarget (reference rollout 6, AB 3.3-3.5): ``rollout_matching_sft`` supervises only the tail
  structure, masks FN desc values (weight 0) and uses no drop multiplier; ``stage2_ab_training``'s
  Channel-B adds CE on the matched prefix structure, weighs FN desc values by ``stage2_ab.desc_ce_weight``,
  applies ``channel_b.drop_invalid_struct_ce_multiplier`` and is bbox-only (AB v1). Both supervise the
  closing brace and the EOS (the legacy stop-neutral masking is gone).
- Coord loss (reference rollout 7.3): each knob is the ``rollout_matching`` override when set, else
  ``custom.coord_soft_ce_w1``.
- Schedule: ``rollout_matching_sft`` has none (every step is Channel-B).

Functions take the root ``Config`` and read only attributes, never ``isinstance`` checks on sections, so the
key-reach test can hand them a recording proxy (``coordexp.bind.reach``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from coordexp.config.derive import packing_mode
from coordexp.core.match import MatchConfig
from coordexp.core.pack import PackBuffer
from coordexp.core.prefix_policy import PrefixPolicyConfig
from coordexp.core.schedule import PatternSchedule, RatioPiece, RatioSchedule, Schedule
from coordexp.core.target_records import TargetConfig
from coordexp.errors import ConfigError

if TYPE_CHECKING:
    from coordexp.config.schema_ab import ScheduleConfig, Stage2ABConfig
    from coordexp.config.schema_rollout import RolloutMatchingConfig
    from coordexp.config.schema_root import Config
    from coordexp.learn.channel_a import SoftContextConfig
    from coordexp.learn.geometry_losses import GeometryLossConfig
    from coordexp.learn.losses import CoordLossConfig

RM = "custom.extra.rollout_matching"
SCHEDULE_KEY = "custom.extra.stage2_ab.schedule"
SFT = "rollout_matching_sft"
AB = "stage2_ab_training"


def _rollout_matching(cfg: Config, needed_by: str) -> RolloutMatchingConfig:
    rm = cfg.rollout_matching
    if rm is None:
        raise ConfigError([f"{RM}: the section is required to build the {needed_by} record. Fix: add it "
                           "(the config validator asks for it under both trainer variants)."])
    return rm


def bind_match(cfg: Config) -> MatchConfig:
    """Match knobs: candidate pruning, gate, IoU mode and resolution, dummy costs."""
    rm = _rollout_matching(cfg, "match")
    return MatchConfig(
        candidate_top_k=rm.candidate_top_k,
        maskiou_gate=rm.maskiou_gate,
        iou_mode=rm.iou_mode,
        maskiou_resolution=rm.maskiou_resolution,
        fp_cost=rm.fp_cost,
        fn_cost=rm.fn_cost,
    )


def bind_target(cfg: Config) -> TargetConfig:
    """BuildTarget knobs; the two trainer variants differ only here (see the module docstring)."""
    rm = _rollout_matching(cfg, "target")
    ab = cfg.stage2_ab
    if cfg.custom.trainer_variant == AB:
        if ab is None:
            raise ConfigError(["custom.extra.stage2_ab: stage2_ab_training needs the section to build the "
                               "target record. Fix: add it."])
        return TargetConfig(
            ot_cost=rm.ot_cost, ot_epsilon=rm.ot_epsilon, ot_iters=rm.ot_iters,
            matched_prefix_structure_ce=True,
            fn_desc_ce_weight=ab.desc_ce_weight,
            closure_supervision=True,
            drop_invalid_struct_ce_multiplier=ab.channel_b.drop_invalid_struct_ce_multiplier,
            bbox_only=True,
        )
    return TargetConfig(
        ot_cost=rm.ot_cost, ot_epsilon=rm.ot_epsilon, ot_iters=rm.ot_iters,
        matched_prefix_structure_ce=False,
        fn_desc_ce_weight=0.0,
        closure_supervision=True,
        drop_invalid_struct_ce_multiplier=1.0,
        bbox_only=False,
    )


def bind_prefix_policy(cfg: Config) -> PrefixPolicyConfig:
    """The prefix policy shares its near-duplicate rule with the duplicate-object stop rule."""
    rm = _rollout_matching(cfg, "prefix policy")
    dup = rm.repeat_terminate.duplicate_object
    return PrefixPolicyConfig(policy=rm.prefix_policy, duplicate_iou=dup.iou_threshold, same_desc=dup.same_desc)


def schedule_from_section(schedule: ScheduleConfig) -> Schedule:
    """The schedule record of a typed ``stage2_ab.schedule`` section.

    The config validator has already checked the section; the checks repeated here guard a section built
    in code, and fail with the dotted key instead of scheduling something nobody asked for.
    """
    if (schedule.pattern is None) == (schedule.b_ratio is None):
        raise ConfigError([f"{SCHEDULE_KEY}: give exactly one of `pattern` and `b_ratio`"])
    try:
        if schedule.pattern is not None:
            return PatternSchedule(schedule.pattern)
        ratio = schedule.b_ratio
        if isinstance(ratio, tuple):
            starts = [0] + [p.until_step for p in ratio[:-1]]
            if any(s is None for s in starts):
                raise ValueError("only the last ramp piece may omit until_step")
            return RatioSchedule(tuple(RatioPiece(s, p.value) for s, p in zip(starts, ratio, strict=True)))
        return RatioSchedule((RatioPiece(0, ratio),))
    except ValueError as exc:
        raise ConfigError([f"{SCHEDULE_KEY}: {exc}"]) from exc


def bind_schedule(cfg: Config) -> Schedule | None:
    """The A/B schedule; None for rollout_matching_sft, whose every step is Channel-B."""
    if cfg.custom.trainer_variant != AB:
        return None
    ab = cfg.stage2_ab
    if ab is None:
        raise ConfigError(["custom.extra.stage2_ab: stage2_ab_training needs the section for its schedule. Fix: add it."])
    return schedule_from_section(ab.schedule)


def bind_coord_loss(cfg: Config) -> CoordLossConfig:
    """Coord-slot loss knobs: the rollout_matching override of each knob, else custom.coord_soft_ce_w1.

    ``CoordLossConfig`` lives with the torch loss code, so it is imported here, when called, not at import.
    """
    from coordexp.learn.losses import CoordLossConfig

    rm = _rollout_matching(cfg, "coord loss")
    base = cfg.custom.coord_soft_ce_w1
    truncate = rm.target_truncate if rm.target_truncate is not None else base.target_truncate
    return CoordLossConfig(
        sigma=rm.target_sigma if rm.target_sigma is not None else base.target_sigma,
        truncate=None if truncate is None else float(truncate),
        temperature=rm.temperature_coord if rm.temperature_coord is not None else base.temperature,
        soft_ce_weight=rm.soft_ce_weight if rm.soft_ce_weight is not None else base.soft_ce_weight,
        w1_weight=rm.w1_weight if rm.w1_weight is not None else base.w1_weight,
        gate_weight=rm.gate_weight if rm.gate_weight is not None else base.gate_weight,
    )


def bind_geometry_loss(cfg: Config) -> GeometryLossConfig | None:
    """AB geometry (SmoothL1, CIoU) and coord-regularizer weights; None for rollout_matching_sft, which has none.

    The decode temperature is ``softctx_temperature``: the geometry reads the distribution the soft
    self-context feeds back (reference AB 4.2).
    """
    from coordexp.learn.geometry_losses import GeometryLossConfig

    if cfg.custom.trainer_variant != AB:
        return None
    ab = _ab_section(cfg, "geometry loss")
    return GeometryLossConfig(
        smoothl1_weight=ab.bbox_smoothl1_weight,
        ciou_weight=ab.bbox_ciou_weight,
        coord_ce_weight=ab.coord_ce_weight,
        el1_weight=ab.coord_el1_weight,
        ehuber_weight=ab.coord_ehuber_weight,
        huber_delta=ab.coord_huber_delta,
        entropy_weight=ab.coord_entropy_weight,
        temperature=ab.softctx_temperature,
    )


def bind_soft_context(cfg: Config) -> SoftContextConfig | None:
    """Channel A's soft self-context knobs; None for rollout_matching_sft (no Channel A)."""
    from coordexp.learn.channel_a import SoftContextConfig

    if cfg.custom.trainer_variant != AB:
        return None
    ab = _ab_section(cfg, "soft self-context")
    return SoftContextConfig(
        n_iter=ab.n_softctx_iter,
        grad_mode=ab.softctx_grad_mode,
        temperature=ab.softctx_temperature,
        embed_mode=ab.coord_ctx_embed_mode,
    )


def _ab_section(cfg: Config, needed_by: str) -> Stage2ABConfig:
    ab = cfg.stage2_ab
    if ab is None:
        raise ConfigError([f"custom.extra.stage2_ab: stage2_ab_training needs the section to build the {needed_by} "
                           "record. Fix: add it."])
    return ab


@attrs.frozen
class PackingPlan:
    """Post-rollout packing as the Pack stage needs it (reference rollout 8)."""

    cap: int  # tokens per packed row (global_max_length)
    buffer_size: int  # segments the carry buffer may hold (training.packing_buffer)
    min_fill_ratio: float  # packs below it are counted as underfilled, never held back
    mode: Literal["carry", "step"]  # carry: one pack per micro-step; step: drain the step's segments
    drop_last: bool  # leftovers are dropped (counted) at the end of training, never flushed

    def new_buffer(self) -> PackBuffer:
        """An empty carry buffer with this plan's limits."""
        return PackBuffer(capacity=self.buffer_size, cap=self.cap, min_fill_ratio=self.min_fill_ratio)


def bind_packing(cfg: Config) -> PackingPlan | None:
    """The packing plan; None when ``training.packing`` is off (each micro-batch is one padded batch)."""
    t = cfg.training
    if not t.packing:
        return None
    return PackingPlan(cap=cfg.global_max_length, buffer_size=t.packing_buffer,
                       min_fill_ratio=t.packing_min_fill_ratio, mode=packing_mode(cfg), drop_last=t.packing_drop_last)


@attrs.frozen
class RolloutBufferPlan:
    """E-step / M-step reuse (reference rollout 9.1); ``m_steps`` counts optimizer steps per window."""

    enabled: bool
    m_steps: int

    @property
    def reuse_steps(self) -> int:
        """Optimizer steps one window is learned for: ``m_steps`` when enabled, else 1 (no reuse)."""
        return self.m_steps if self.enabled else 1


def bind_rollout_buffer(cfg: Config) -> RolloutBufferPlan:
    rm = _rollout_matching(cfg, "rollout buffer")
    return RolloutBufferPlan(enabled=rm.rollout_buffer.enabled, m_steps=rm.rollout_buffer.m_steps)
