"""Config -> the records the transitions and the learner take, in one place.

    bound = bind(config)              # every record of a run, built once
    bound.match, bound.target, bound.prefix_policy, bound.schedule, bound.coord_loss, bound.geometry_loss,
    bound.soft_context,
    bound.packing, bound.rollout_buffer, bound.decoding, bound.stop_rules, bound.desc_monitor, bound.server,
    bound.vllm, bound.derived

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
from coordexp.bind.rollout import bind_decoding, bind_desc_monitor, bind_stop_rules, bind_vllm
from coordexp.bind.server import ServerPlan, bind_server
from coordexp.bind.transitions import (
    PackingPlan,
    RolloutBufferPlan,
    bind_coord_loss,
    bind_geometry_loss,
    bind_match,
    bind_packing,
    bind_prefix_policy,
    bind_rollout_buffer,
    bind_schedule,
    bind_soft_context,
    bind_target,
    schedule_from_section,
)
from coordexp.config.derive import Derived, derive
from coordexp.core.desc_agreement import DescMonitorSettings
from coordexp.core.match import MatchConfig
from coordexp.core.prefix_policy import PrefixPolicyConfig
from coordexp.core.schedule import Schedule
from coordexp.core.target_records import TargetConfig

if TYPE_CHECKING:
    from coordexp.backends.protocol import DecodingConfig
    from coordexp.backends.vllm_spec import VllmSpec
    from coordexp.config.schema_root import Config
    from coordexp.core.repeat import StopRulesConfig
    from coordexp.learn.channel_a import SoftContextConfig
    from coordexp.learn.geometry_losses import GeometryLossConfig
    from coordexp.learn.losses import CoordLossConfig

__all__ = [
    "PRESETS",
    "Bound",
    "PackingPlan",
    "RolloutBufferPlan",
    "bind",
    "bind_coord_loss",
    "bind_decoding",
    "bind_desc_monitor",
    "bind_geometry_loss",
    "bind_match",
    "bind_packing",
    "bind_prefix_policy",
    "bind_rollout_buffer",
    "bind_schedule",
    "bind_server",
    "bind_soft_context",
    "bind_stop_rules",
    "bind_target",
    "bind_vllm",
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
    geometry_loss: GeometryLossConfig | None  # None: rollout_matching_sft (no AB geometry terms)
    soft_context: SoftContextConfig | None  # None: rollout_matching_sft (no Channel A)
    packing: PackingPlan | None  # None: packing off
    rollout_buffer: RolloutBufferPlan
    decoding: DecodingConfig
    stop_rules: StopRulesConfig
    desc_monitor: DescMonitorSettings  # metrics only; .enabled false: no monitor
    server: ServerPlan | None  # vLLM server mode only (coordexp.bind.server)
    vllm: VllmSpec  # the colocate vLLM engine knobs (coordexp.backends.vllm_colocate)
    derived: Derived  # world size, gradient accumulation, samples / rollouts per step


def bind(cfg: Config, *, env: Mapping[str, str] | None = None) -> Bound:
    """All records of ``cfg`` (already validated); ``env`` stands in for ``os.environ`` (WORLD_SIZE)."""
    derived = derive(cfg, env)
    return Bound(
        variant=cfg.custom.trainer_variant,
        match=bind_match(cfg),
        target=bind_target(cfg),
        prefix_policy=bind_prefix_policy(cfg),
        schedule=bind_schedule(cfg),
        coord_loss=bind_coord_loss(cfg),
        geometry_loss=bind_geometry_loss(cfg),
        soft_context=bind_soft_context(cfg),
        packing=bind_packing(cfg),
        rollout_buffer=bind_rollout_buffer(cfg),
        decoding=bind_decoding(cfg),
        stop_rules=bind_stop_rules(cfg),
        desc_monitor=bind_desc_monitor(cfg),
        server=bind_server(cfg),
        vllm=bind_vllm(cfg, derived),
        derived=derived,
    )
