"""Config -> the records the transitions and the learner take, in one place.

    bound = bind(config)              # every record of a run, built once
    bound.match, bound.target, bound.prefix_policy, bound.schedule, bound.coord_loss,
    bound.packing, bound.rollout_buffer, bound.decoding, bound.stop_rules, bound.derived

``coordexp.bind.transitions`` and ``coordexp.bind.rollout`` hold one ``bind_*`` function per record; nothing else turns a
config section into a core record. Importing this package pulls in no torch: ``bind_coord_loss`` imports the
torch-side record when it is called. ``coordexp.bind.reach`` checks that every key of the schema is read by
some code path (or listed, with its reason, in ``coordexp.bind.unread``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from coordexp.bind.presets import PRESETS, minimal_config, tool_config
from coordexp.bind.rollout import bind_decoding, bind_stop_rules
from coordexp.bind.transitions import (
    PackingPlan,
    RolloutBufferPlan,
    bind_coord_loss,
    bind_match,
    bind_packing,
    bind_prefix_policy,
    bind_rollout_buffer,
    bind_schedule,
    bind_target,
    schedule_from_section,
)
from coordexp.config.derive import Derived, derive
from coordexp.core.match import MatchConfig
from coordexp.core.prefix_policy import PrefixPolicyConfig
from coordexp.core.schedule import Schedule
from coordexp.core.target_records import TargetConfig

if TYPE_CHECKING:
    from coordexp.backends.protocol import DecodingConfig
    from coordexp.config.schema_root import Config
    from coordexp.core.repeat import StopRulesConfig
    from coordexp.learn.losses import CoordLossConfig

__all__ = [
    "PRESETS",
    "Bound",
    "PackingPlan",
    "RolloutBufferPlan",
    "bind",
    "bind_coord_loss",
    "bind_decoding",
    "bind_match",
    "bind_packing",
    "bind_prefix_policy",
    "bind_rollout_buffer",
    "bind_schedule",
    "bind_stop_rules",
    "bind_target",
    "minimal_config",
    "tool_config",
    "schedule_from_section",
]


@attrs.frozen
class Bound:
    """Every record a run's transitions and learner take, built from one resolved config."""

    variant: str  # custom.trainer_variant
    match: MatchConfig
    target: TargetConfig
    prefix_policy: PrefixPolicyConfig
    schedule: Schedule | None  # None: rollout_matching_sft, every step is Channel-B
    coord_loss: CoordLossConfig
    packing: PackingPlan | None  # None: packing off
    rollout_buffer: RolloutBufferPlan
    decoding: DecodingConfig
    stop_rules: StopRulesConfig
    derived: Derived  # world size, gradient accumulation, samples / rollouts per step


def bind(cfg: Config, *, env: Mapping[str, str] | None = None) -> Bound:
    """All records of ``cfg`` (already validated); ``env`` stands in for ``os.environ`` (WORLD_SIZE)."""
    return Bound(
        variant=cfg.custom.trainer_variant,
        match=bind_match(cfg),
        target=bind_target(cfg),
        prefix_policy=bind_prefix_policy(cfg),
        schedule=bind_schedule(cfg),
        coord_loss=bind_coord_loss(cfg),
        packing=bind_packing(cfg),
        rollout_buffer=bind_rollout_buffer(cfg),
        decoding=bind_decoding(cfg),
        stop_rules=bind_stop_rules(cfg),
        derived=derive(cfg, env),
    )
