"""Loading: extends chains, --base_config, --set overrides, the top-level alias layout, legacy keys."""

from __future__ import annotations

import pytest

from coordexp.config import load, load_config, load_config_data, validate
from coordexp.config.loader import deep_merge, parse_override
from coordexp.errors import ConfigError
from tests.unit.config.conftest import ab, check, errors, one_error, write_yaml

RM = "custom.extra.rollout_matching"


def test_deep_merge_recurses_mappings_and_replaces_lists_and_null():
    base = {"a": {"b": 1, "c": [1, 2]}, "d": 5}
    top = {"a": {"c": [3]}, "d": None}
    assert deep_merge(base, top) == {"a": {"b": 1, "c": [3]}, "d": None}


def test_extends_deep_merges_and_replaces_lists(tmp_path):
    write_yaml(tmp_path, "base.yaml", {**ab(), "tuner": {"target_modules": ["q_proj", "v_proj"], "lora_rank": 8}})
    leaf = write_yaml(tmp_path, "leaf/leaf.yaml", {"extends": "../base.yaml", "tuner": {"target_modules": ["o_proj"]}})
    config = load_config(leaf)
    assert config.tuner.target_modules == ("o_proj",)
    assert config.tuner.lora_rank == 8
    assert config.stage2_ab.schedule.b_ratio == 0.5


def test_extends_list_merges_left_to_right(tmp_path):
    write_yaml(tmp_path, "base.yaml", ab())
    write_yaml(tmp_path, "one.yaml", {"training": {"seed": 1, "logging_steps": 3}})
    write_yaml(tmp_path, "two.yaml", {"training": {"seed": 2}})
    leaf = write_yaml(tmp_path, "leaf.yaml", {"extends": ["base.yaml", "one.yaml", "two.yaml"]})
    training = load_config(leaf).training
    assert (training.seed, training.logging_steps) == (2, 3)


def test_explicit_null_replaces_inherited_value(tmp_path):
    write_yaml(tmp_path, "base.yaml", ab())
    leaf = write_yaml(tmp_path, "leaf.yaml", {"extends": "base.yaml", "training": {"effective_batch_size": None}})
    config = load_config(leaf)
    assert config.training.effective_batch_size is None
    assert config.training.packing is True  # siblings of the nulled key are still inherited
    with pytest.raises(ConfigError, match="requires training.effective_batch_size"):
        validate(config, env={})


def test_extends_cycle_names_the_files(tmp_path):
    write_yaml(tmp_path, "a.yaml", {"extends": "b.yaml"})
    write_yaml(tmp_path, "b.yaml", {"extends": "a.yaml"})
    with pytest.raises(ConfigError, match=r"`extends` cycle: a.yaml -> b.yaml -> a.yaml"):
        load_config(tmp_path / "a.yaml")


def test_missing_extends_base_names_both_files(tmp_path):
    leaf = write_yaml(tmp_path, "leaf.yaml", {"extends": "nope.yaml"})
    with pytest.raises(ConfigError, match=r"nope.yaml \(extended from .*leaf.yaml\)"):
        load_config(leaf)


def test_base_config_goes_underneath(tmp_path):
    base = write_yaml(tmp_path, "base.yaml", {**ab(), "global_max_length": 4000})
    main = write_yaml(tmp_path, "main.yaml", {"global_max_length": 5000})
    assert load_config(main, base_config=base).global_max_length == 5000
    assert load_config(main, base_config=base).training.effective_batch_size == 4


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: [unclosed\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_set_values_are_typed_as_yaml():
    assert parse_override("training.packing=true") == {"training": {"packing": True}}
    assert parse_override("a.b=0.5") == {"a": {"b": 0.5}}
    assert parse_override("a.b=[A, B]") == {"a": {"b": ["A", "B"]}}
    assert parse_override("a.b='17'") == {"a": {"b": "17"}}


def test_set_creates_new_nested_keys(tmp_path):
    path = write_yaml(tmp_path, "c.yaml", ab())
    config = load_config(path, overrides=[f"{RM}.repeat_terminate.duplicate_object.enabled=true"])
    assert config.rollout_matching.repeat_terminate.duplicate_object.enabled is True


@pytest.mark.parametrize("text", ["training.packing", "=1", "a..b=1", "a.b=[unclosed"])
def test_bad_set_syntax_is_a_config_error(text):
    with pytest.raises(ConfigError, match="--set"):
        parse_override(text)


def test_top_level_alias_layout_is_accepted_and_errors_use_it():
    data = ab()
    data["rollout_matching"] = data["custom"]["extra"].pop("rollout_matching")
    data["stage2_ab"] = data["custom"]["extra"].pop("stage2_ab")
    assert check(data) == []
    message = one_error(data, "rollout_matching.decoding.top_p=0")
    assert message.startswith("rollout_matching.decoding.top_p: must be in (0, 1]")


def test_alias_override_merges_into_canonical_layout():
    assert check(ab(), "rollout_matching.max_new_tokens=64") == []
    loaded_errors = errors(ab(), "rollout_matching.decode_batch_size=0")
    assert loaded_errors[0].startswith("rollout_matching.decode_batch_size: must be > 0")


def test_both_layouts_in_one_file_is_an_error_naming_both():
    data = ab()
    data["rollout_matching"] = {"rollout_backend": "hf"}
    message = one_error(data)
    assert "`rollout_matching` and `custom.extra.rollout_matching` are both given" in message


def test_empty_section_counts_as_absent():
    data = ab()
    data["custom"]["extra"]["rollout_matching"] = {}
    assert "the rollout_matching section must be provided" in one_error(data)


@pytest.mark.parametrize(
    ("override", "key", "replacement"),
    [
        (f"{RM}.temperature=0.5", f"{RM}.temperature", f"{RM}.decoding.temperature"),
        (f"{RM}.rollout_infer_batch_size=2", f"{RM}.rollout_infer_batch_size", f"{RM}.decode_batch_size"),
        ("custom.extra.stage2_ab.bbox_giou_weight=1", "custom.extra.stage2_ab.bbox_giou_weight", "bbox_ciou_weight"),
        (f"{RM}.vllm.server.base_url=http://h:1", f"{RM}.vllm.server.base_url", "servers: [{base_url"),
        ("extra={}", "extra", "custom.extra"),
        ("custom.extra.stage2_ab.channel_b.stop_neutral={enabled: true}", "stop_neutral", "always supervised"),
    ],
)
def test_legacy_keys_are_refused_with_replacement(override, key, replacement):
    message = one_error(ab(), override)
    assert key in message and "has been removed" in message and replacement in message


@pytest.mark.parametrize("layout", ["canonical", "top_level"])
def test_rollout_buffer_loads_in_both_layouts(layout):
    data = ab()
    section = {"rollout_backend": "hf", "rollout_buffer": {"enabled": True, "m_steps": 3}}
    if layout == "canonical":
        data["custom"]["extra"]["rollout_matching"] = section
    else:
        del data["custom"]["extra"]["rollout_matching"]
        data["rollout_matching"] = section
    assert check(data) == []
    buffer = load_config_data(data).config.rollout_matching.rollout_buffer
    assert (buffer.enabled, buffer.m_steps) == (True, 3)


def test_absent_rollout_buffer_is_off_with_one_step():
    buffer = load_config_data(ab()).config.rollout_matching.rollout_buffer
    assert (buffer.enabled, buffer.m_steps) == (False, 1)


def test_rollout_buffer_m_steps_below_one_is_refused_by_name():
    message = one_error(ab(), f"{RM}.rollout_buffer={{enabled: true, m_steps: 0}}")
    assert message.startswith(f"{RM}.rollout_buffer.m_steps: must be >= 1, got 0")


@pytest.mark.parametrize(
    ("overrides", "warned"),
    [
        ((f"{RM}.rollout_buffer.enabled=true",), "never reuses a window"),
        ((f"{RM}.rollout_buffer.m_steps=2",), "m_steps 2 has no effect"),
        ((f"{RM}.rollout_buffer={{enabled: true, m_steps: 2}}", "training.dataloader_drop_last=false",
          "custom.extra.stage2_ab.channel_b.mode=micro"), "partial accumulation window"),
    ],
)
def test_rollout_buffer_settings_without_effect_warn(overrides, warned):
    found = check(ab(), *overrides)
    assert len(found) == 1 and warned in found[0], found


def test_prompt_file_is_relative_to_the_declaring_file(tmp_path):
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "user.txt").write_text("find things", encoding="utf-8")
    data = ab()
    data["custom"]["user_prompt_file"] = "prompts/user.txt"
    loaded = load(write_yaml(tmp_path, "c.yaml", data))
    assert loaded.config.custom.user_prompt_file == str(tmp_path / "prompts" / "user.txt")
