"""logging.jsonl is line-atomic, versioned and append-on-resume; TensorBoard gets the same scalars."""

from __future__ import annotations

import json
import math
import threading

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from coordexp.errors import TelemetryError
from coordexp.telemetry import sinks
from coordexp.telemetry.diagnostics import DiagnosticGuard
from coordexp.telemetry.sinks import (
    JsonlSink,
    LogRecord,
    LogSinks,
    TensorBoardSink,
    decode_line,
    encode_line,
    last_per_step,
    read_log,
)


def test_records_round_trip_and_a_resumed_run_appends(tmp_path):
    path = tmp_path / "logging.jsonl"
    sink = JsonlSink(path)
    sink.write(LogRecord("train", 10, metrics={"loss": 0.5, "rollout/samples": 8.0}, time=1.0))
    sink.close()
    resumed = JsonlSink(path)
    resumed.write(LogRecord("eval", 10, metrics={"eval_rollout/f1": 0.25}, time=2.0))
    resumed.close()
    records = read_log(path)
    assert [(r.mode, r.step, dict(r.metrics)) for r in records] == [
        ("train", 10, {"loss": 0.5, "rollout/samples": 8.0}), ("eval", 10, {"eval_rollout/f1": 0.25})]
    with pytest.raises(TelemetryError, match="write after close"):
        resumed.write(LogRecord("train", 11, metrics={}))


def test_each_line_is_one_os_write(tmp_path, monkeypatch):
    calls = []
    real = sinks.os.write

    def spy(fd, data):
        calls.append(data)
        return real(fd, data)

    monkeypatch.setattr(sinks.os, "write", spy)
    sink = JsonlSink(tmp_path / "logging.jsonl")
    for step in range(3):
        sink.write(LogRecord("train", step, metrics={"rollout/stop_rule/ngram_repeat": 1.0, "loss": 0.5}))
    sink.close()
    assert len(calls) == 3 and all(c.endswith(b"\n") and c.count(b"\n") == 1 for c in calls)


def test_concurrent_writers_never_interleave_within_a_line(tmp_path):
    path = tmp_path / "logging.jsonl"
    big = {f"rollout/parse_dropped/{i}": float(i) for i in range(200)}  # ~6 kB lines

    def writer(worker: int) -> None:
        sink = JsonlSink(path)
        for step in range(50):
            sink.write(LogRecord("train", worker * 1000 + step, metrics=big))
        sink.close()

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_log(path)
    assert len(records) == 200 and all(dict(r.metrics) == big for r in records)


def test_nonfinite_values_are_null_named_and_counted(tmp_path):
    line = encode_line(LogRecord("train", 3, metrics={"loss": math.nan, "loss/ce": 1.5, "grad_norm": math.inf}, time=0))
    payload = json.loads(line)
    assert payload["metrics"] == {"loss": None, "loss/ce": 1.5, "grad_norm": None}
    assert payload["nonfinite"] == ["loss", "grad_norm"]
    back = decode_line(line.decode(), where="x:1")
    assert math.isnan(back.metrics["loss"]) and back.metrics["loss/ce"] == 1.5
    sink = JsonlSink(tmp_path / "l.jsonl")
    sink.write(LogRecord("train", 3, metrics={"loss": math.nan}))
    assert sink.nonfinite_values == 1


@pytest.mark.parametrize(("payload", "match"), [
    ("not json", "not a JSON line"),
    ([1], "a log line is a JSON object"),
    ({"schema_version": 2, "mode": "train", "step": 1, "time": 0, "metrics": {}}, "unsupported schema_version 2"),
    ({"schema_version": True, "mode": "train", "step": 1, "time": 0, "metrics": {}}, "must be an integer"),
    ({"schema_version": 1, "mode": "test", "step": 1, "time": 0, "metrics": {}}, "mode must be one of"),
    ({"schema_version": 1, "mode": "train", "step": 1.0, "time": 0, "metrics": {}}, "'step' must be an integer"),
    ({"schema_version": 1, "mode": "train", "step": 1, "time": 0, "metrics": {"loss": True}}, "must be a number"),
    ({"schema_version": 1, "mode": "train", "step": 1, "time": 0, "metrics": {"loss": None}}, "must be a number"),
    ({"schema_version": 1, "mode": "meta", "step": 1, "time": 0}, "needs a 'meta' object"),
])
def test_bad_lines_are_rejected_with_their_place(payload, match):
    text = payload if isinstance(payload, str) else json.dumps(payload)
    with pytest.raises(TelemetryError, match=match) as err:
        decode_line(text, where="run/logging.jsonl:7")
    assert str(err.value).startswith("run/logging.jsonl:7: ")


def test_last_record_per_step_wins():
    recs = [LogRecord("train", 1, metrics={"loss": 1.0}), LogRecord("train", 2, metrics={"loss": 2.0}),
            LogRecord("eval", 2, metrics={}), LogRecord("train", 2, metrics={"loss": 2.5})]
    kept = last_per_step(recs)
    assert [(r.mode, r.step, r.metrics.get("loss")) for r in kept] == [
        ("train", 1, 1.0), ("train", 2, 2.5), ("eval", 2, None)]


def _scalars(log_dir):
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_gets_every_metric_nan_included(tmp_path):
    tb = TensorBoardSink(tmp_path / "events")
    tb.write(LogRecord("train", 5, metrics={"loss": 0.25, "rollout/f1": math.nan}))
    tb.write(LogRecord("eval", 5, metrics={"eval_rollout/f1": 0.5}))
    tb.close()
    scalars = _scalars(tmp_path / "events")
    assert scalars["loss"] == [(5, 0.25)] and scalars["eval_rollout/f1"] == [(5, 0.5)]
    assert math.isnan(scalars["rollout/f1"][0][1])


def test_a_failing_tensorboard_is_counted_not_fatal(tmp_path):
    guard = DiagnosticGuard()
    tb = TensorBoardSink(tmp_path / "events", guard=guard)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    tb._writer.add_scalar = broken
    fan = LogSinks([JsonlSink(tmp_path / "logging.jsonl"), tb])
    fan.write(LogRecord("train", 1, metrics={"loss": 1.0}))
    fan.write(LogRecord("train", 2, metrics={"loss": 1.0}))
    fan.close()
    assert len(read_log(tmp_path / "logging.jsonl")) == 2
    assert guard.metrics() == {"telemetry/diagnostic_failures/tensorboard": 2.0}


def test_meta_is_written_when_it_changes(tmp_path):
    fan = LogSinks([JsonlSink(tmp_path / "logging.jsonl")])
    meta = {"rollout_backend": "hf", "sampling": {"temperature": 0.0}}
    assert fan.write_meta(0, meta) and not fan.write_meta(1, dict(meta))
    assert fan.write_meta(2, {**meta, "rollout_backend": "vllm_server"})
    fan.close()
    assert [(r.mode, r.step, r.meta["rollout_backend"]) for r in read_log(tmp_path / "logging.jsonl")] == [
        ("meta", 0, "hf"), ("meta", 2, "vllm_server")]
