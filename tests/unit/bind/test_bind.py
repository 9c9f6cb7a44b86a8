"""coordexp.bind: each record is built from the config keys that feed it, with the variant rules."""

from __future__ import annotations

import subprocess
import sys

import attrs
import pytest

from coordexp.bind import (
    bind,
    bind_coord_loss,
    bind_match,
    bind_packing,
    bind_prefix_policy,
    bind_rollout_buffer,
    bind_schedule,
    bind_target,
    minimal_config,
    tool_config,
)
from coordexp.core.geometry import IouMode
from coordexp.core.match import MatchConfig
from coordexp.core.prefix_policy import PrefixPolicy, PrefixPolicyConfig
from coordexp.core.schedule import Channel, PatternSchedule, RatioPiece, RatioSchedule, channel_for_step
from coordexp.core.target_records import TargetConfig
from coordexp.errors import ConfigError
from coordexp.spec.paths import REPO_ROOT

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"
SFT_V, AB_V = "rollout_matching_sft", "stage2_ab_training"


def test_match_record_takes_every_match_key():
    cfg = minimal_config(SFT_V, (f"{RM}.candidate_top_k=3", f"{RM}.maskiou_gate=0.5", f"{RM}.iou_mode=raster",
                                 f"{RM}.maskiou_resolution=64", f"{RM}.fp_cost=0.5", f"{RM}.fn_cost=2.0"))
    assert bind_match(cfg) == MatchConfig(3, 0.5, IouMode.RASTER, 64, 0.5, 2.0)


def test_schema_defaults_reach_the_match_record():
    m = bind_match(minimal_config(SFT_V))
    assert (m.candidate_top_k, m.maskiou_gate, m.iou_mode, m.maskiou_resolution, m.fp_cost, m.fn_cost) == (
        10, 0.3, IouMode.EXACT, 256, 1.0, 1.0)


def test_target_switches_follow_the_trainer_variant():
    sft = bind_target(minimal_config(SFT_V, (f"{RM}.ot_epsilon=5.0",)))
    assert (sft.matched_prefix_structure_ce, sft.fn_desc_ce_weight, sft.drop_invalid_struct_ce_multiplier,
            sft.bbox_only, sft.closure_supervision, sft.ot_epsilon) == (False, 0.0, 1.0, False, True, 5.0)
    ab = bind_target(minimal_config(AB_V, (f"{AB}.desc_ce_weight=0.25",
                                           f"{AB}.channel_b.drop_invalid_struct_ce_multiplier=1.5")))
    assert (ab.matched_prefix_structure_ce, ab.fn_desc_ce_weight, ab.drop_invalid_struct_ce_multiplier,
            ab.bbox_only, ab.closure_supervision) == (True, 0.25, 1.5, True, True)


def test_prefix_policy_shares_the_duplicate_stop_rule_settings():
    cfg = minimal_config(SFT_V, (f"{RM}.prefix_policy=cut_at_first_duplicate",
                                 f"{RM}.repeat_terminate.duplicate_object={{iou_threshold: 0.7, same_desc: false}}"))
    assert bind_prefix_policy(cfg) == PrefixPolicyConfig(PrefixPolicy.CUT_AT_FIRST_DUPLICATE, 0.7, False)


def test_schedule_is_none_for_sft_and_built_from_pattern_or_ramp():
    assert bind_schedule(minimal_config(SFT_V)) is None
    assert bind_schedule(minimal_config(AB_V)) == PatternSchedule((Channel.B,))
    ramp = minimal_config(AB_V, (f"{AB}.schedule.pattern=null",
                                 f"{AB}.schedule.b_ratio=[{{until_step: 4, value: 0.5}}, {{value: 0.25}}]"))
    schedule = bind_schedule(ramp)
    assert schedule == RatioSchedule((RatioPiece(0, 0.5), RatioPiece(4, 0.25)))
    assert "".join(channel_for_step(s, schedule=schedule) for s in range(8)) == "ABABAAAB"


def test_coord_loss_takes_each_rollout_override_else_the_shared_default():
    base = bind_coord_loss(minimal_config(SFT_V, ("custom.coord_soft_ce_w1.target_sigma=3.0",
                                                  "custom.coord_soft_ce_w1.target_truncate=8")))
    assert (base.sigma, base.truncate, base.temperature, base.gate_weight) == (3.0, 8.0, 1.0, 1.0)
    over = bind_coord_loss(minimal_config(SFT_V, ("custom.coord_soft_ce_w1.target_sigma=3.0",
                                                  f"{RM}.target_sigma=1.5", f"{RM}.gate_weight=0.0",
                                                  f"{RM}.temperature_coord=2.0")))
    assert (over.sigma, over.truncate, over.temperature, over.gate_weight) == (1.5, None, 2.0, 0.0)


def test_packing_plan_is_none_when_off_and_follows_the_derived_mode():
    assert bind_packing(minimal_config(SFT_V)) is None
    plan = bind_packing(minimal_config(SFT_V, ("training.packing=true", "training.packing_buffer=7",
                                               "global_max_length=900")))
    assert (plan.cap, plan.buffer_size, plan.min_fill_ratio, plan.mode, plan.drop_last) == (900, 7, 0.65, "carry", True)
    buffer = plan.new_buffer()
    assert (buffer.capacity, buffer.cap, buffer.size) == (7, 900, 0)
    step = bind_packing(minimal_config(AB_V, ("training.packing=true", "training.dataloader_drop_last=true",
                                              f"{AB}.channel_b.mode=step")))
    assert step.mode == "step"


def test_rollout_buffer_reuse_steps():
    assert bind_rollout_buffer(minimal_config(SFT_V)).reuse_steps == 1
    on = bind_rollout_buffer(minimal_config(SFT_V, (f"{RM}.rollout_buffer={{enabled: true, m_steps: 3}}",)))
    assert (on.enabled, on.m_steps, on.reuse_steps) == (True, 3, 3)
    off = bind_rollout_buffer(minimal_config(SFT_V, (f"{RM}.rollout_buffer.m_steps=3",)))
    assert off.reuse_steps == 1


def test_bind_holds_every_record_of_a_shipped_config():
    from coordexp.config import load_config

    config = load_config(REPO_ROOT / "configs" / "demo.yaml")
    bound = bind(config, env={})
    assert bound.variant == AB_V and bound.packing is not None and bound.packing.mode == "step"
    assert bound.schedule is not None and bound.derived.gradient_accumulation_steps == 8
    assert bound.target == bind_target(config) and bound.match == bind_match(config)


def test_a_section_missing_in_a_config_built_in_code_names_the_key():
    config = minimal_config(SFT_V)
    broken = attrs.evolve(config, custom=attrs.evolve(config.custom, extra=attrs.evolve(config.custom.extra,
                                                                                           rollout_matching=None)))
    with pytest.raises(ConfigError, match=r"custom\.extra\.rollout_matching: the section is required"):
        bind_match(broken)


@pytest.mark.parametrize("record", [MatchConfig, TargetConfig, PrefixPolicyConfig])
def test_core_records_carry_no_defaults(record):
    """Defaults live once, in the schema: a core record built without the config is incomplete."""
    assert [f.name for f in attrs.fields(record) if f.default is not attrs.NOTHING] == []


def test_tool_presets_are_the_variants_with_flags():
    cfg = tool_config("stage2_ab", iou_mode="raster", prefix_policy="cut_at_first_invalid")
    assert cfg.custom.trainer_variant == AB_V
    assert bind_match(cfg).iou_mode is IouMode.RASTER
    assert bind_prefix_policy(cfg).policy is PrefixPolicy.CUT_AT_FIRST_INVALID


def test_importing_bind_loads_no_torch():
    code = "import sys, coordexp.bind; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
