"""Strict structuring: unknown keys (with suggestions), wrong types, all problems in one error."""

from __future__ import annotations

from tests.unit.config.conftest import ab, check, errors, one_error

RM = "custom.extra.rollout_matching"


def test_minimal_ab_config_is_valid():
    assert check(ab()) == []


def test_top_level_typo_suggests_the_key():
    message = one_error(ab(), "global_max_lenght=100")
    assert message.startswith("global_max_lenght: unknown key")
    assert "did you mean `global_max_length`" in message


def test_training_typo_names_dotted_key():
    message = one_error(ab(), "training.pakcing=true")
    assert message.startswith("training.pakcing: unknown key")
    assert "`training.packing`" in message


def test_decoding_typo_names_full_dotted_key():
    message = one_error(ab(), f"{RM}.decoding.temprature=0.5")
    assert message.startswith(f"{RM}.decoding.temprature: unknown key")
    assert f"did you mean `{RM}.decoding.temperature`" in message


def test_list_item_typo_names_index():
    servers = "[{base_url: 'http://h:1', group_port: 2, unknown_flag: true}]"
    message = one_error(ab(), f"{RM}.vllm.server.servers={servers}")
    assert message.startswith(f"{RM}.vllm.server.servers[0].unknown_flag: unknown key")


def test_key_in_wrong_section_points_to_its_home():
    message = one_error(ab(), "training.max_new_tokens=2048")
    assert f"`{RM}.max_new_tokens`" in message


def test_string_for_bool_is_a_type_error_not_true():
    message = one_error(ab(), "training.packing='false'")
    assert message.startswith("training.packing: wrong type, expected bool")


def test_float_for_int_is_a_type_error():
    message = one_error(ab(), f"{RM}.max_new_tokens=3.5")
    assert message.startswith(f"{RM}.max_new_tokens: wrong type, expected int, got 3.5")


def test_bool_for_int_is_a_type_error():
    assert one_error(ab(), "training.seed=true").startswith("training.seed: wrong type, expected int")


def test_string_for_list_is_a_type_error():
    assert one_error(ab(), "tuner.target_modules=all-linear").startswith("tuner.target_modules: wrong type")


def test_bad_literal_lists_the_choices():
    message = one_error(ab(), f"{RM}.rollout_backend=tgi")
    assert message.startswith(f"{RM}.rollout_backend: invalid value")
    assert "'vllm', 'hf'" in message


def test_missing_required_key_is_named():
    data = ab()
    del data["model"]["model"]
    assert one_error(data).startswith("model.model: required key is missing")


def test_all_problems_of_one_file_are_reported_together():
    found = errors(ab(), "training.pakcing=true", f"{RM}.decoding.top_q=1", "tuner.lora_rank=x", "custom.foo=1")
    keys = sorted(m.split(":")[0] for m in found)
    assert keys == sorted(["custom.foo", f"{RM}.decoding.top_q", "training.pakcing", "tuner.lora_rank"])


def test_int_is_accepted_for_float():
    check(ab(), "training.learning_rate=1")
