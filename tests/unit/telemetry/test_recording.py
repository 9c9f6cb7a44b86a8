"""rollouts.jsonl: what a backend returned, written whole per line, read back strictly with file:line errors."""

from __future__ import annotations

import json

import pytest

from coordexp.core.repeat import StopRule
from coordexp.errors import DataError
from coordexp.telemetry.recording import (
    RolloutRecorder,
    config_hash,
    read_rollouts,
    rollouts_path,
)

CONFIG = """\
# resolved config
training:
  seed: 17
  learning_rate: 2.0e-05
custom:
  trainer_variant: rollout_matching_sft
"""


def test_config_hash_ignores_layout_and_follows_values():
    reordered = "custom: {trainer_variant: rollout_matching_sft}\ntraining: {learning_rate: 0.00002, seed: 17}\n"
    h = config_hash(CONFIG)
    assert len(h) == 16 and int(h, 16) >= 0
    assert config_hash(reordered) == h
    assert config_hash(CONFIG.replace("17", "18")) != h
    with pytest.raises(DataError, match="not YAML"):
        config_hash("a: [1,")


def test_records_round_trip_as_core_rollouts(tmp_path):
    h = config_hash(CONFIG)
    rec = RolloutRecorder(rollouts_path(tmp_path), config_hash=h)
    rec.record(sample_id="train.jsonl:7", step=3, prompt_ids=[1, 2, 3], completion_ids=[9, 9, 0],
               finish_reason="stop", stop_rule="max_object_keys")
    rec.record(sample_id="val.jsonl:1", step=3, prompt_ids=[1], completion_ids=[], finish_reason="length",
               stop_rule=None, mode="eval")
    rec.close()
    back = read_rollouts(tmp_path / "rollouts.jsonl", expect_hash=h)
    assert [(r.sample_id, r.mode, r.stop_rule) for r in back] == [
        ("train.jsonl:7", "train", StopRule.MAX_OBJECT_KEYS), ("val.jsonl:1", "eval", None)]
    rollout = back[0].rollout()
    assert (rollout.completion_ids, rollout.prompt_ids, rollout.finish_reason, rollout.sample_id) == (
        (9, 9, 0), (1, 2, 3), "stop", "train.jsonl:7")
    assert rollouts_path(tmp_path, 2).name == "rollouts.rank2.jsonl"


def _line(**changes):
    base = {"format_version": 1, "config_hash": "0123456789abcdef", "step": 0, "mode": "train", "sample_id": "s",
            "prompt_ids": [1], "completion_ids": [2], "finish_reason": None, "stop_rule": None}
    base.update(changes)
    return json.dumps({k: v for k, v in base.items() if v != "DROP"})


@pytest.mark.parametrize(("line", "match"), [
    ("{nope", "not a JSON line"),
    (_line(step="DROP"), r"fields missing \['step'\]"),
    (_line(extra=1), r"unknown \['extra'\]"),
    (_line(format_version=2), "format_version 2 is not supported"),
    (_line(format_version=True), "format_version True is not supported"),
    (_line(completion_ids=[1, True]), "'completion_ids' must be a list of token ids"),
    (_line(prompt_ids=[-1]), "'prompt_ids' must be a list of token ids"),
    (_line(stop_rule="too_long"), "'stop_rule' 'too_long' is not one of"),
    (_line(mode="test"), "'mode' must be one of"),
    (_line(config_hash="xyz"), "'config_hash' must be 16 hex digits"),
    (_line(step=-1), "'step' must be an integer >= 0"),
])
def test_every_bad_line_names_file_line_and_field(tmp_path, line, match):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(_line() + "\n" + line + "\n")
    with pytest.raises(DataError, match=match) as err:
        read_rollouts(path)
    assert str(err.value).startswith(f"{path}:2: ")


def test_a_replay_under_another_config_and_a_torn_last_line_are_refused(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text(_line() + "\n")
    with pytest.raises(DataError, match="recorded under config 0123456789abcdef, this run's config is"):
        read_rollouts(path, expect_hash=config_hash(CONFIG))
    path.write_text(_line() + "\n" + _line()[:20])
    with pytest.raises(DataError, match=":2: incomplete last line"):
        read_rollouts(path)


def test_the_recorder_refuses_what_the_reader_would(tmp_path):
    with pytest.raises(DataError, match="16 hex digits"):
        RolloutRecorder(tmp_path / "r.jsonl", config_hash="abc")
    rec = RolloutRecorder(tmp_path / "r.jsonl", config_hash="0123456789abcdef")
    with pytest.raises(DataError, match="'prompt_ids' must be a list of token ids"):
        rec.record(sample_id="s", step=0, prompt_ids=[-5], completion_ids=[], finish_reason=None, stop_rule=None)
    rec.close()
    assert (tmp_path / "r.jsonl").read_text() == ""
