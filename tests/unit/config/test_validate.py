"""Cross-field rules: each names its key and says how to fix the problem."""

from __future__ import annotations

import pytest

from coordexp.config import derive, load_config_data, validate
from coordexp.errors import ConfigWarning
from tests.unit.config.conftest import SFT_MINIMAL, ab, check, errors, one_error

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"
SERVER = [f"{RM}.rollout_backend=vllm", f"{RM}.vllm.mode=server",
          f"{RM}.vllm.server.servers=[{{base_url: 'http://127.0.0.1:8000', group_port: 51216}}]"]


def test_pattern_is_accepted_instead_of_b_ratio():
    check(ab(), f"{AB}.schedule.b_ratio=null", f"{AB}.schedule.pattern=[A, A, B]")


def test_pattern_and_b_ratio_together_is_an_error():
    message = one_error(ab(), f"{AB}.schedule.pattern=[A, B]")
    assert message.startswith(f"{AB}.schedule: both pattern and b_ratio are set") and "Fix:" in message


def test_schedule_needs_pattern_or_b_ratio():
    assert "b_ratio must be provided" in one_error(ab(), f"{AB}.schedule.b_ratio=null")


def test_empty_pattern_is_an_error():
    assert one_error(ab(), f"{AB}.schedule.b_ratio=null", f"{AB}.schedule.pattern=[]").startswith(
        f"{AB}.schedule.pattern: is empty")


def test_pattern_channel_must_be_a_or_b():
    assert one_error(ab(), f"{AB}.schedule.b_ratio=null", f"{AB}.schedule.pattern=[A, C]").startswith(
        f"{AB}.schedule.pattern[1]: invalid value")


@pytest.mark.parametrize("value", ["-0.1", "1.5"])
def test_b_ratio_out_of_range(value):
    assert one_error(ab(), f"{AB}.schedule.b_ratio={value}").startswith(f"{AB}.schedule.b_ratio: must be in [0, 1]")


def test_b_ratio_ramp_of_the_seed_is_accepted():
    ramp = "[{until_step: 200, value: 0.05}, {until_step: 400, value: 0.10}, {until_step: null, value: 0.20}]"
    check(ab(), f"{AB}.schedule.b_ratio={ramp}")


def test_b_ratio_ramp_steps_must_increase():
    ramp = "[{until_step: 400, value: 0.05}, {until_step: 200, value: 0.10}]"
    assert one_error(ab(), f"{AB}.schedule.b_ratio={ramp}").startswith(
        f"{AB}.schedule.b_ratio[1].until_step: must be > 400")


def test_b_ratio_ramp_last_piece_may_omit_until_step():
    check(ab(), f"{AB}.schedule.b_ratio=[{{until_step: 40, value: 0.05}}, {{value: 0.20}}]")
    check(ab(), f"{AB}.schedule.b_ratio=[{{until_step: 40, value: 0.05}}, {{until_step: 80, value: 0.20}}]")


def test_b_ratio_ramp_open_piece_must_be_last():
    ramp = "[{value: 0.05}, {until_step: 80, value: 0.20}]"
    assert one_error(ab(), f"{AB}.schedule.b_ratio={ramp}").startswith(
        f"{AB}.schedule.b_ratio[0].until_step: null is only allowed on the last entry")


def test_b_ratio_ramp_values_in_unit_interval():
    ramp = "[{until_step: 100, value: 0.05}, {until_step: null, value: 2.0}]"
    assert one_error(ab(), f"{AB}.schedule.b_ratio={ramp}").startswith(f"{AB}.schedule.b_ratio[1].value")


def test_ab_variant_needs_stage2_ab_section():
    assert one_error(ab(), f"{AB}=null").startswith(f"{AB}: the stage2_ab section must be provided")


def test_sft_variant_needs_rollout_matching_section():
    assert one_error(SFT_MINIMAL, f"{RM}=null").startswith(f"{RM}: the rollout_matching section must be provided")


def test_sft_with_stage2_ab_warns_it_is_ignored():
    found = check(SFT_MINIMAL, f"{AB}.schedule.b_ratio=0.5")
    assert len(found) == 1 and found[0].startswith(f"{AB}: is ignored")


def test_step_mode_needs_packing_and_drop_last():
    found = errors(ab(), "training.packing=false", "training.dataloader_drop_last=false")
    assert all(m.startswith(f"{AB}.channel_b.mode") for m in found)
    assert any("training.packing: true" in m for m in found)
    assert any("dataloader_drop_last: true" in m for m in found)


def test_micro_mode_works_without_packing():
    check(ab(), f"{AB}.channel_b.mode=micro", "training.packing=false")


def test_packing_needs_drop_last_buffer_and_fill_ratio():
    found = errors(ab(), "training.packing_drop_last=false", "training.packing_buffer=0",
                   "training.packing_min_fill_ratio=1.5")
    assert sorted(m.split(":")[0] for m in found) == [
        "training.packing_buffer", "training.packing_drop_last", "training.packing_min_fill_ratio"]


def _packing_mode(data, *overrides: str):
    loaded = load_config_data(data, overrides=overrides)
    return derive(loaded.config, {}).packing_mode


def test_packing_mode_defaults_follow_the_trainer():
    assert _packing_mode(SFT_MINIMAL, "training.packing=true") == "carry"
    assert _packing_mode(SFT_MINIMAL, "training.packing=true", "training.packing_mode=step") == "step"
    assert _packing_mode(ab()) == "step"
    assert _packing_mode(ab(), f"{AB}.channel_b.mode=micro") == "carry"
    assert _packing_mode(SFT_MINIMAL) is None  # packing off


def test_sft_step_packing_mode_loads():
    assert check(SFT_MINIMAL, "training.packing=true", "training.packing_mode=step") == []


def test_packing_mode_must_agree_with_channel_b_mode():
    message = one_error(ab(), "training.packing_mode=carry")
    assert message.startswith("training.packing_mode: `carry` conflicts with")
    assert f"{AB}.channel_b.mode `step`" in message and "remove training.packing_mode" in message
    check(ab(), "training.packing_mode=step")
    check(ab(), f"{AB}.channel_b.mode=micro", "training.packing_mode=carry")


def test_packing_mode_without_packing_warns():
    found = check(SFT_MINIMAL, "training.packing_mode=step")
    assert len(found) == 1 and found[0].startswith("training.packing_mode: `step` has no effect")


def test_packing_mode_value_is_checked():
    message = one_error(SFT_MINIMAL, "training.packing=true", "training.packing_mode=window")
    assert message.startswith("training.packing_mode: invalid value")


def test_length_budget_warns_with_numbers():
    with pytest.warns(ConfigWarning, match=r"global_max_length: 1000 < prompt_len_estimate 1024 \+ max_new_tokens 512"):
        loaded = load_config_data(ab(), overrides=["global_max_length=1000"])
        validate(loaded.config, env={})


def test_server_mode_needs_world_size_one_from_env():
    message = one_error(ab(), *SERVER, world_size=2)
    assert message.startswith(f"{RM}.vllm.mode: server mode needs a single learner process")
    assert "from WORLD_SIZE" in message


def test_world_size_key_wins_over_env():
    check(ab(), *SERVER, "training.world_size=1", world_size=4)


def test_server_mode_needs_servers():
    assert one_error(ab(), f"{RM}.rollout_backend=vllm", f"{RM}.vllm.mode=server").startswith(
        f"{RM}.vllm.server.servers: server mode needs at least one server")


def test_server_url_is_checked():
    bad = f"{RM}.vllm.server.servers=[{{base_url: '127.0.0.1:8000/', group_port: 1}}]"
    assert one_error(ab(), *SERVER[:2], bad).startswith(f"{RM}.vllm.server.servers[0].base_url")


def test_server_timeout_must_be_positive():
    assert one_error(ab(), *SERVER, f"{RM}.vllm.server.timeout_s=0").startswith(
        f"{RM}.vllm.server.timeout_s: must be > 0")


def test_pipeline_is_valid_for_any_backend_and_warns_where_nothing_overlaps():
    on = f"{AB}.channel_b.enable_pipeline=true"
    shared = check(ab(), on, f"{RM}.decode_batch_size=1")  # hf: rollouts on the learner's device
    assert any(w.startswith(f"{AB}.channel_b.enable_pipeline: rollouts (hf) run on the learner's device")
               for w in shared)
    assert check(ab(), *SERVER, on, f"{RM}.decode_batch_size=1") == []
    one_chunk = check(ab(), *SERVER, on, f"{RM}.decode_batch_size=4")  # 4 rollouts per step: a single chunk
    assert [w for w in one_chunk if "nothing to overlap" in w]


def test_vllm_needs_greedy_decode_mode():
    assert one_error(ab(), *SERVER, f"{RM}.decode_mode=beam").startswith(f"{RM}.decode_mode: vLLM backends require")
    check(ab(), f"{RM}.decode_mode=beam", f"{RM}.num_beams=2")  # HF beams are fine


def test_offload_with_deepspeed_is_refused_with_mitigations():
    found = errors(ab(), f"{RM}.offload.enabled=true", "training.deepspeed=zero2")
    offload = [m for m in found if m.startswith(f"{RM}.offload.enabled: rollout offload is not supported with DeepSpeed")]
    assert len(offload) == 1 and "switch rollout_backend=hf" in offload[0]


def test_deepspeed_is_refused_with_the_ddp_route():
    message = one_error(ab(), "training.deepspeed=zero2")
    assert message.startswith("training.deepspeed: is 'zero2', but coordexp does not run DeepSpeed")
    assert "torchrun --nproc_per_node" in message


def test_offload_without_effect_warns():
    found = check(ab(), f"{RM}.offload.enabled=true")
    assert found and found[0].startswith(f"{RM}.offload.enabled: has no effect")


@pytest.mark.parametrize(
    ("override", "text"),
    [
        (f"{RM}.decoding.temperature=-1", "decoding.temperature: must be >= 0"),
        (f"{RM}.decoding.top_p=0", "decoding.top_p: must be in (0, 1]"),
        (f"{RM}.decoding.top_k=0", "decoding.top_k: must be -1 (off) or >= 1"),
        (f"{RM}.repetition_penalty=0", "repetition_penalty: must be > 0"),
        (f"{RM}.decode_batch_size=0", "decode_batch_size: must be > 0"),
        (f"{AB}.channel_b.drop_invalid_struct_ce_multiplier=4.5", "drop_invalid_struct_ce_multiplier: must be in [1.0, 4.0]"),
        (f"{AB}.n_softctx_iter=0", "n_softctx_iter: must be >= 1"),
    ],
)
def test_ranges_name_the_key(override, text):
    assert text in one_error(ab(), override)


def test_decode_batch_size_defaults_to_one():
    loaded = load_config_data(ab())
    assert loaded.config.rollout_matching.decode_batch_size == 1


def test_repeat_terminate_enabled_alone_has_working_defaults():
    loaded = load_config_data(ab(), overrides=[f"{RM}.repeat_terminate={{enabled: true}}"])
    rt = loaded.config.rollout_matching.repeat_terminate
    assert (rt.min_new_tokens, rt.max_consecutive_token_repeats, rt.ngram_size, rt.ngram_repeats) == (256, 64, 64, 2)
    assert validate(loaded.config, env={}) == []


def test_repeat_terminate_with_every_rule_off_is_an_error():
    message = one_error(ab(), f"{RM}.repeat_terminate={{enabled: true, max_consecutive_token_repeats: 0, ngram_size: 0}}")
    assert message.startswith(f"{RM}.repeat_terminate.enabled: is true but every rule is off")


def test_object_cap_without_enabled_warns():
    found = check(ab(), f"{RM}.repeat_terminate.max_object_keys=60")
    assert found and "max_object_keys" in found[0]


def test_ab_needs_effective_batch_size():
    assert one_error(ab(), "training.effective_batch_size=null").startswith(
        "training.effective_batch_size: stage2_ab_training requires")


def test_ab_effective_batch_must_divide():
    message = one_error(ab(), "training.effective_batch_size=10", "training.per_device_train_batch_size=2", world_size=2)
    assert message.startswith("training.effective_batch_size: 10 must be divisible") and "= 4" in message


def test_ab_explicit_accumulation_must_match_derived():
    message = one_error(ab(), "training.effective_batch_size=8", "training.gradient_accumulation_steps=3",
                        "training.per_device_train_batch_size=2", world_size=2)
    assert message.startswith("training.gradient_accumulation_steps: 3 must not conflict")


def test_sync_adapter_needs_lora():
    assert one_error(ab(), f"{RM}.vllm.sync.mode=adapter").startswith(f"{RM}.vllm.sync.mode: `adapter` sync needs")


def test_train_jsonl_required_and_synthetic_checked():
    assert one_error(ab(), "custom.train_jsonl=null").startswith("custom.train_jsonl: is required")
    assert "unknown generator 'coco'" in one_error(ab(), "custom.train_jsonl='synthetic://coco?n=3&seed=0'")


def test_eval_needs_val_jsonl():
    assert one_error(ab(), "training.eval_strategy=steps").startswith("custom.val_jsonl: is not set")


def test_token_acc_best_metric_is_refused():
    assert one_error(ab(), "training.metric_for_best_model=token_acc").startswith("training.metric_for_best_model")


def test_prompt_text_and_file_are_exclusive(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("x", encoding="utf-8")
    assert "both custom.user_prompt and custom.user_prompt_file" in one_error(
        ab(), "custom.user_prompt=hi", f"custom.user_prompt_file={prompt}")


def test_bad_world_size_env_is_a_config_error():
    assert "WORLD_SIZE='x'" in one_error(ab(), world_size="x")
