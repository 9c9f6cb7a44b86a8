"""The backend registry and the config -> rollout records binding."""

from __future__ import annotations

import pytest

from coordexp.backends import BACKEND_KEY, available, build_backend
from coordexp.bind.presets import minimal_config
from coordexp.bind.rollout import bind_decoding, bind_stop_rules
from coordexp.errors import ConfigError

RM = "custom.extra.rollout_matching"


def test_only_built_backends_are_available_and_others_name_the_config_key():
    assert {"hf", "recorded"} <= set(available())
    for name in [n for n in ("vllm_colocate", "vllm_server", "tgi") if n not in available()]:
        with pytest.raises(ConfigError, match=BACKEND_KEY.replace(".", r"\.")):
            build_backend(name)


def test_stop_rules_bind_every_repeat_terminate_key():
    cfg = minimal_config("rollout_matching_sft", [
        f"{RM}.repeat_terminate.enabled=true", f"{RM}.repeat_terminate.min_new_tokens=8",
        f"{RM}.repeat_terminate.max_consecutive_token_repeats=5", f"{RM}.repeat_terminate.ngram_size=3",
        f"{RM}.repeat_terminate.ngram_repeats=4", f"{RM}.repeat_terminate.max_object_keys=60",
        f"{RM}.repeat_terminate.duplicate_object.enabled=true",
        f"{RM}.repeat_terminate.duplicate_object.iou_threshold=0.8",
        f"{RM}.repeat_terminate.duplicate_object.same_desc=false",
    ])  # fmt: skip
    r = bind_stop_rules(cfg)
    assert (r.enabled, r.min_new_tokens, r.max_consecutive_token_repeats, r.ngram_size, r.ngram_repeats) == (True, 8, 5, 3, 4)
    assert (r.max_object_keys, r.duplicate_object, r.duplicate_iou_threshold, r.duplicate_same_desc) == (60, True, 0.8, False)
    assert r.active and r.watches_objects


def test_stop_rules_are_off_by_default():
    r = bind_stop_rules(minimal_config("rollout_matching_sft"))
    assert not r.enabled and not r.active


@pytest.mark.parametrize(
    ("overrides", "mode", "candidates"),
    [
        ([], "greedy", 1),
        ([f"{RM}.decoding.temperature=0.7"], "sampling", 1),
        ([f"{RM}.decode_mode=beam", f"{RM}.num_beams=4"], "beam", 4),
        ([f"{RM}.decode_mode=beam", f"{RM}.num_beams=4", f"{RM}.num_return_sequences=2"], "beam", 2),
    ],
)
def test_decoding_mode_and_beam_candidates(overrides, mode, candidates):
    d = bind_decoding(minimal_config("rollout_matching_sft", overrides))
    assert d.decode_mode == mode and d.num_return_sequences == candidates
    assert d.samples == (mode == "sampling")


def test_decoding_binds_every_knob():
    d = bind_decoding(minimal_config("rollout_matching_sft", [
        f"{RM}.decoding.temperature=0.5", f"{RM}.decoding.top_p=0.8", f"{RM}.decoding.top_k=20",
        f"{RM}.repetition_penalty=1.05", f"{RM}.max_new_tokens=300", f"{RM}.decode_batch_size=6",
    ]))  # fmt: skip
    assert (d.temperature, d.top_p, d.top_k, d.repetition_penalty, d.max_new_tokens, d.decode_batch_size) == (
        0.5, 0.8, 20, 1.05, 300, 6
    )
