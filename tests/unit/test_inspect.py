"""``python -m coordexp.inspect``: the report a user reads when parse metrics look odd."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from coordexp.inspect import main

C = '"<|coord_{}|>"'
TEXT = (
    '{"object_1": {"desc": "cat", "bbox_2d": [' + ", ".join(C.format(k) for k in (1, 2, 3, 4)) + "]}, "
    '"object_2": {"desc": "b", "bbox_2d": [' + C.format(5) + ']}, "object_3": {"desc": "x'
)


def test_json_report_has_the_parse_section(capsys):
    assert main(["--text", TEXT, "--tokenizer", "char", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    view = report["sections"]["parse"]
    assert report["tokenizer"] == "char"
    assert [o["index"] for o in view["valid"]] == [1]
    assert view["valid"][0]["coord_bins"] == [1, 2, 3, 4]
    assert [(d["key"], d["reason"]) for d in view["dropped"]] == [("object_2", "wrong_arity"), ("object_3", "key_invalid")]
    assert view["dropped"][0]["text"] == '{"desc": "b", "bbox_2d": ["<|coord_5|>"]}'
    assert view["truncated"] is True and view["max_object_index"] == 2
    assert view["prefix_text"] == TEXT[: TEXT.index(', "object_3"')]


def test_text_report_shows_cut_objects_and_drops(capsys):
    assert main(["--text", TEXT, "--tokenizer", "char"]) == 0
    out = capsys.readouterr().out
    assert "cut off: ', \"object_3\": {\"desc\": \"x'" in out
    assert "object_1  1      cat   bbox_2d   1 2 3 4" in out
    assert "drops by reason: key_invalid=1, wrong_arity=1" in out
    assert "truncated: yes" in out


def test_ids_and_file_inputs(tmp_path, capsys):
    assert main(["--ids", "1, 2", "--tokenizer", "char", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["sections"]["parse"]
    assert view["fallback"] == "no_open_brace" and view["response_len"] == 2
    f = tmp_path / "rollout.txt"
    f.write_text('{"objects": [{"desc": "a", "bbox_2d": [' + ", ".join(C.format(k) for k in (1, 1, 2, 2)) + "]}]}")
    assert main(["--file", str(f), "--tokenizer", "char", "--layout", "objects_array", "--json"]) == 0
    view = json.loads(capsys.readouterr().out)["sections"]["parse"]
    assert [o["key"] for o in view["valid"]] == ["objects[0]"]


def test_errors_are_reported_not_raised(capsys):
    assert main(["--ids", "99999", "--tokenizer", "char"]) == 2
    assert "outside the vocabulary" in capsys.readouterr().err


def test_module_runs_as_a_script_with_the_default_tokenizer():
    out = subprocess.run(
        [sys.executable, "-m", "coordexp.inspect", "--text", TEXT, "--json"],
        capture_output=True, text=True, check=True, cwd=Path(__file__).resolve().parents[2],
    ).stdout
    report = json.loads(out)
    assert report["tokenizer"] in ("fixture", "char")
    assert [o["index"] for o in report["sections"]["parse"]["valid"]] == [1]
