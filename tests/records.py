"""Transition records with the schema's defaults, for tests: built by ``coordexp.bind`` from the minimal config
of each trainer variant, then changed field by field (``attrs.evolve`` runs the records' validators).

The core records carry no defaults of their own (defaults live once, in the config schema), so a test that
needs "the default match config but with gate 0.5" writes ``match_cfg(maskiou_gate=0.5)``.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordexp.bind import bind_match, bind_prefix_policy, bind_target, minimal_config
from coordexp.core.match import MatchConfig
from coordexp.core.prefix_policy import PrefixPolicyConfig
from coordexp.core.target_records import TargetConfig

SFT_CONFIG = minimal_config("rollout_matching_sft")
AB_CONFIG = minimal_config("stage2_ab_training")


def match_cfg(**changes: Any) -> MatchConfig:
    return attrs.evolve(bind_match(SFT_CONFIG), **changes)


def sft_target(**changes: Any) -> TargetConfig:
    """rollout_matching_sft's BuildTarget switches."""
    return attrs.evolve(bind_target(SFT_CONFIG), **changes)


def ab_target(**changes: Any) -> TargetConfig:
    """stage2_ab_training Channel-B's BuildTarget switches."""
    return attrs.evolve(bind_target(AB_CONFIG), **changes)


def policy_cfg(policy: str = "keep", **changes: Any) -> PrefixPolicyConfig:
    return attrs.evolve(bind_prefix_policy(SFT_CONFIG), policy=policy, **changes)
