"""The recorded backend, the replay trace through the machine, format detection and its errors, the health rules."""

from __future__ import annotations

import json

import pytest

from coordexp.backends import build_backend
from coordexp.backends.protocol import RolloutRequest
from coordexp.core.health import SlotClass, near_duplicate_pairs, slot_class
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.errors import RolloutError
from coordexp.machine import StepMachine
from coordexp.replay.cli import main
from coordexp.replay.formats import encode_text, tokenizer_context
from coordexp.telemetry.recording import RolloutRecord

HASH = "0123456789abcdef"


@pytest.fixture(scope="module")
def ctx():
    return tokenizer_context()


def _request(sid, prompt=(1, 2)):
    return RolloutRequest(sample_id=sid, prompt_ids=prompt, encoding=None, images=())


def test_recorded_backend_replays_by_sample_and_step_and_names_what_is_missing():
    recs = [RolloutRecord("a", 0, (1, 2), (5, 6, 7), "stop", None, HASH),
            RolloutRecord("a", 3, (1, 2), (8,), "length", "max_object_keys", HASH)]
    backend = build_backend("recorded", records=recs, source="run/rollouts.jsonl")
    backend.at_step(3)
    [res] = backend.generate([_request("a")])
    assert (res.rollout.completion_ids, res.rollout.finish_reason, res.stop_rule.value, res.new_tokens) == (
        (8,), "length", "max_object_keys", 1)
    backend.at_step(1)
    with pytest.raises(RolloutError, match=r"run/rollouts.jsonl: no recorded rollout for sample 'a' at train step 1 "
                                           r"\(it is recorded at train steps \[0, 3\]\)"):
        backend.generate([_request("a")])
    with pytest.raises(RolloutError, match="sample 'b'.*not recorded at all"):
        backend.generate([_request("b")])
    backend.at_step(0)
    with pytest.raises(RolloutError, match="prompt ids differ"):
        backend.generate([_request("a", prompt=(9,))])


def test_replay_trigger_runs_schedule_to_pack_and_never_learns():
    class Work:
        def __init__(self):
            self.calls = []

        def __getattr__(self, name):
            if name in {"reuses_buffer", "is_channel_a", "is_eval"}:
                return lambda: False
            if name == "has_segments":
                return lambda: True
            return lambda: self.calls.append(name)

    work = Work()
    assert StepMachine(work).run_replay() == ["Schedule", "Rollout", "Parse", "Match", "BuildTarget", "Pack", "Log"]
    assert "learn" not in work.calls
    machine = StepMachine(Work())
    machine.run_replay()
    assert machine.run_train_step()[-2:] == ["Learn", "Log"]  # the same machine trains again afterwards


@pytest.mark.parametrize(("value", "cls"), [("720", SlotClass.PLAIN_DIGITS), ("0", SlotClass.PLAIN_DIGITS),
                                            ("尼斯", SlotClass.NON_ASCII), (" Country", SlotClass.LEADING_SPACE),
                                            (" 尼", SlotClass.NON_ASCII), ("<|coord_1000|>", SlotClass.OTHER)])
def test_slot_classes_first_match_wins(value, cls):
    assert slot_class(value) is cls


def test_near_duplicate_pairs_need_the_same_desc_and_iou_09(ctx):
    box = '["<|coord_100|>", "<|coord_100|>", "<|coord_200|>", "<|coord_200|>"]'
    shifted = '["<|coord_101|>", "<|coord_100|>", "<|coord_201|>", "<|coord_200|>"]'  # IoU 0.98
    far = '["<|coord_500|>", "<|coord_500|>", "<|coord_600|>", "<|coord_600|>"]'
    text = ("{" + ", ".join(f'"object_{i}": {{"desc": "{d}", "bbox_2d": {b}}}' for i, (d, b) in enumerate(
        [("flag", box), ("Flag ", shifted), ("car", box), ("flag", far), ("flag", box)], 1)) + "}")
    p = parse(Rollout(encode_text(text, ctx)), ctx=ctx)
    assert len(p.valid_objects) == 5
    assert near_duplicate_pairs(p.valid_objects) == 3  # (1,2), (1,5), (2,5); car and the far flag pair with none


def test_an_unknown_input_exits_2_naming_the_file_and_what_was_expected(tmp_path, capsys):
    bad = tmp_path / "notes.jsonl"
    bad.write_text(json.dumps({"hello": 1}) + "\n", encoding="utf-8")
    assert main(["--rollouts", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "expected a coordexp run folder or rollouts.jsonl" in err and "Traceback" not in err
    assert main(["--rollouts", str(tmp_path / "missing"), "--quiet"]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    (tmp_path / "empty_dir").mkdir()
    assert main(["--rollouts", str(tmp_path / "empty_dir"), "--quiet"]) == 2
    assert "no recording found in this folder" in capsys.readouterr().err


def test_a_broken_legacy_line_names_file_line_and_field(tmp_path, capsys):
    path = tmp_path / "gt_vs_pred.jsonl"
    path.write_text(json.dumps({"gt": [], "pred": [], "width": 10, "height": 10}) + "\n"
                    + json.dumps({"gt": [{"type": "line", "points": [0, 0, 1, 1]}], "pred": [], "width": 10,
                                  "height": 10}) + "\n", encoding="utf-8")
    assert main(["--rollouts", str(path), "--quiet"]) == 2
    assert f"{path}:2: gt[0]: type 'line' is not bbox_2d or poly" in capsys.readouterr().err


def test_a_dump_sample_missing_its_gt_is_refused(tmp_path, capsys):
    (tmp_path / "step_000001_event_000.json").write_text(json.dumps({"global_step": 1, "samples": [
        {"rollout_text": "{}"}]}), encoding="utf-8")
    assert main(["--rollouts", str(tmp_path), "--quiet"]) == 2
    assert "needs gt_text (vLLM debug dump) or gt_objects (monitor dump)" in capsys.readouterr().err
