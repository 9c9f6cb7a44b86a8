"""Per-sample prediction files: success and error lines are written checked and read back strictly."""

from __future__ import annotations

import json

import pytest

from coordexp.errors import DataError
from coordexp.eval.predictions import PredictionWriter, error_line, read_predictions, success_line
from coordexp.spec.runners._samples import Pipeline

PIPE = Pipeline("rollout_matching_sft")


def test_success_and_error_lines_round_trip(tmp_path):
    sample = {"pred": [{"desc": "a", "poly": [100, 100, 200, 100, 200, 200]}],
              "gt": [{"desc": "a", "bbox_2d": [100, 100, 200, 200]}]}
    outcome = PIPE.outcome(sample, index=0, train=False)
    writer = PredictionWriter(tmp_path / "predictions.jsonl")
    writer.write(success_line(outcome, step=5, gt=PIPE.gt_of(sample, "s0"), width=640, height=480))
    writer.write(error_line(sample_id="s1", step=5, stage="prompt", exc=DataError("bad image")))
    writer.close()
    ok, err = read_predictions(tmp_path / "predictions.jsonl")
    assert ok["pred"][0]["geom_type"] == "poly" and ok["matches"][0]["iou"] == pytest.approx(0.5)
    assert (ok["width"], ok["height"], ok["truncated"], ok["dropped"]) == (640, 480, False, {})
    assert err["error"] == {"type": "DataError", "message": "bad image"} and err["stage"] == "prompt"


@pytest.mark.parametrize(("change", "match"), [
    ({"status": "done"}, "'status' must be 'ok' or 'error'"),
    ({"error": None}, "'error' has the wrong type"),
    ({"step": True}, "'step' has the wrong type"),
    ({"format_version": 2}, "format_version 2 is not supported"),
    ({"extra": 1}, r"unknown \['extra'\]"),
])
def test_bad_lines_are_refused_with_their_place(tmp_path, change, match):
    line = {**error_line(sample_id="s", step=0, stage="prompt", exc=DataError("x")), **change}
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps(error_line(sample_id="s", step=0, stage="prompt", exc=DataError("x"))) + "\n"
                    + json.dumps(line) + "\n")
    with pytest.raises(DataError, match=match) as err:
        read_predictions(path)
    assert str(err.value).startswith(f"{path}:2")


def test_the_writer_refuses_a_malformed_line(tmp_path):
    sample = {"pred": [{"desc": "a", "bbox_2d": [1, 1, 9, 9]}], "gt": [{"desc": "a", "bbox_2d": [1, 1, 9, 9]}]}
    line = success_line(PIPE.outcome(sample, index=0, train=False), step=0, gt=PIPE.gt_of(sample, "s0"),
                        width=10, height=10)
    del line["matches"][0]["iou"]
    writer = PredictionWriter(tmp_path / "p.jsonl")
    with pytest.raises(DataError, match=r"\(sample s0\): matches\[0\]: fields missing \['iou'\]"):
        writer.write(line)
    writer.close()
    assert (tmp_path / "p.jsonl").read_text() == ""
