"""Stage-2 AB end to end on the tiny model: both channels with step-mode packing, identical logs after a
resume, and the stability guard on a really degenerate run (an untrained model with a 24-token budget
truncates every rollout: no mock needed)."""

from __future__ import annotations

import json
import logging

import pytest

from coordexp.errors import StabilityStop
from coordexp.runfolder import TRAINER_STATE
from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import run_config
from tests.integration.test_executor import _ctrl_c_after

pytestmark = pytest.mark.slow
VOLATILE = ("time/", "rollout/gen_tokens_per_s")  # wall-clock values: the only ones a resume may change


def _ab(tiny, **kw):
    cfg = tiny("stage2_ab_training", training__eval_strategy="no", training__save_strategy="no", **kw)
    cfg["custom"]["extra"]["stage2_ab"]["schedule"] = {"b_ratio": 0.5}  # A, B, A, B
    return cfg


def _train(folder):
    return {r.step: r.metrics for r in read_log(folder / "logging.jsonl") if r.mode == "train"}


def _stable(metrics):
    return {k: v for k, v in metrics.items() if not k.startswith(VOLATILE)}


def test_ab_steps_log_both_channels_and_a_resume_gives_identical_logs(tmp_path, tiny, monkeypatch):
    cfg = _ab(tiny, training__max_steps=4)
    straight = run_config(tmp_path, cfg, name="straight.yaml")
    logs = _train(straight.run_dir)
    assert sorted(logs) == [1, 2, 3, 4]
    assert [logs[s]["stage2/channel_b"] for s in (1, 2, 3, 4)] == [0.0, 1.0, 0.0, 1.0]
    assert [logs[s]["stage2/channel_a"] for s in (1, 2, 3, 4)] == [1.0, 0.0, 1.0, 0.0]
    assert [logs[s]["stage2_ab/b_ratio_realized"] for s in (1, 2, 3, 4)] == pytest.approx([0.0, 0.5, 1 / 3, 0.5])
    for s, m in logs.items():
        assert m["loss"] > 0 and m["loss/ce"] > 0 and m["learn/packs"] >= 1
        assert m["packing/post_rollout_packs"] >= 1  # step-mode packing on both channels
        assert ("rollout/gen_new_tokens_p90" in m) == (s % 2 == 0)  # only Channel B rolls out
    cfg["training"]["run_name"] = "cut"
    with monkeypatch.context() as m:
        _ctrl_c_after(m, 2)
        cut = run_config(tmp_path, cfg, name="cut.yaml")
    assert cut.interrupted and cut.steps == 2
    resumed = run_config(tmp_path, cfg, name="cut.yaml", resume=cut.run_dir)
    assert resumed.steps == 4
    got = _train(cut.run_dir)
    assert sorted(got) == [1, 2, 3, 4]
    for s in (1, 2, 3, 4):
        want, have = _stable(logs[s]), _stable(got[s])
        assert sorted(have) == sorted(want), s
        for k in want:
            assert have[k] == pytest.approx(want[k], abs=1e-6), (s, k)


def _degenerate(tiny, **guard):
    cfg = tiny("stage2_ab_training", training__eval_strategy="no", training__save_strategy="no",
               training__max_steps=4)
    extra = cfg["custom"]["extra"]
    extra["stage2_ab"]["schedule"] = {"b_ratio": 1.0}
    extra["rollout_matching"]["repeat_terminate"] = {"enabled": False}  # the 24-token budget ends every rollout
    extra["stability_guard"] = {"enabled": True, "patience": 1, **guard}
    return cfg


def test_guard_alarms_in_the_log_of_a_degenerate_run(tmp_path, tiny, caplog):
    with caplog.at_level(logging.WARNING, logger="coordexp"):
        summary = run_config(tmp_path, _degenerate(tiny, max_truncated_rate=0.05))
    logs = _train(summary.run_dir)
    assert all(m["rollout/parse_truncated_rate"] == 1.0 for m in logs.values())
    assert [logs[s]["guard/alarm/truncation"] for s in (1, 2, 3, 4)] == [1.0] * 4
    assert [logs[s]["guard/alarm/length_saturation"] for s in (1, 2, 3, 4)] == [1.0] * 4
    assert "stability alarm `truncation` at step 1: rollout/parse_truncated_rate = 1 > 0.05" in caplog.text
    assert summary.steps == 4 and not summary.interrupted  # action warn: the run goes on


def test_guard_stop_saves_a_checkpoint_and_names_the_alarm(tmp_path, tiny):
    with pytest.raises(StabilityStop, match=r"`length_saturation` at step 1.*action: stop.*checkpoint-1"):
        run_config(tmp_path, _degenerate(tiny, action="stop"))
    folder = tmp_path / "out" / "run"
    assert (folder / "checkpoint-1" / TRAINER_STATE).is_file()
    assert sorted(_train(folder)) == [1]


def test_guard_backoff_lowers_b_ratio_and_a_resume_keeps_it(tmp_path, tiny, monkeypatch):
    cfg = _degenerate(tiny, action="backoff", backoff_b_ratio=0.0)
    cfg["custom"]["extra"]["stage2_ab"]["schedule"] = {"b_ratio": 0.5}
    straight = run_config(tmp_path, cfg, name="straight.yaml")
    logs = _train(straight.run_dir)
    # step 2 (the first B) alarms and backs off: from step 3 on b_ratio is 0, so no B step follows
    assert [logs[s]["stage2/channel_b"] for s in (1, 2, 3, 4)] == [0.0, 1.0, 0.0, 0.0]
    assert [logs[s]["stage2_ab/b_ratio_scheduled"] for s in (1, 2, 3, 4)] == [0.5, 0.5, 0.0, 0.0]
    assert logs[2]["guard/backoff"] == 1.0 and logs[2]["guard/alarm/truncation"] == 1.0
    cfg["training"]["run_name"] = "cut"
    with monkeypatch.context() as m:
        _ctrl_c_after(m, 3)
        cut = run_config(tmp_path, cfg, name="cut.yaml")
    state = json.loads((cut.checkpoint / TRAINER_STATE).read_text(encoding="utf-8"))
    assert state["stability"]["backoffs"] == [
        {"start_step": 2, "value": 0.0, "alarms": ["length_saturation", "truncation"]}]
    run_config(tmp_path, cfg, name="cut.yaml", resume=cut.run_dir)
    got = _train(cut.run_dir)
    for s in (1, 2, 3, 4):
        for k in ("stage2/channel_b", "stage2_ab/b_ratio_scheduled", "stage2_ab/b_ratio_realized", "loss"):
            assert got[s][k] == pytest.approx(logs[s][k], abs=1e-6), (s, k)


def _b_steps(tiny, **kw):
    """Every step Channel-B, three rollouts per step (the effective batch is 2)."""
    cfg = tiny("stage2_ab_training", training__eval_strategy="no", training__save_strategy="no",
               training__max_steps=2, **kw)
    extra = cfg["custom"]["extra"]
    extra["stage2_ab"] = {"schedule": {"pattern": ["A", "B"]}, "channel_b": {"mode": "step", "rollouts_per_step": 3}}
    extra["rollout_matching"].update({"monitor_dump": {"enabled": False}, "record_rollouts": True,
                                      "decode_batch_size": 1})
    cfg["custom"]["train_jsonl"] = "synthetic://shapes?n=6&seed=0"
    return cfg


def test_rollouts_per_step_sizes_a_channel_b_step_learned_in_several_packs_and_one_optimizer_step(tmp_path, tiny):
    summary = run_config(tmp_path, _b_steps(tiny, global_max_length=700))
    a, b = (_train(summary.run_dir)[s] for s in (1, 2))
    assert (a["train/samples_total"], b["train/samples_total"]) == (2.0, 3.0)  # A: effective batch; B: rollouts_per_step
    assert b["rollout/samples"] == 3.0 and b["learn/segments"] == 3.0
    assert b["learn/packs"] >= 2 and b["packing/post_rollout_packs"] == b["learn/packs"]  # several packs ...
    assert (a["train/global_step"], b["train/global_step"]) == (1.0, 2.0)  # ... and one optimizer step each


def test_pipelined_channel_b_equals_the_unpipelined_step_and_logs_its_times(tmp_path, tiny):
    plain = run_config(tmp_path, _b_steps(tiny), name="plain.yaml")
    cfg = _b_steps(tiny)
    cfg["training"]["run_name"] = "piped"
    cfg["custom"]["extra"]["stage2_ab"]["channel_b"]["enable_pipeline"] = True
    piped = run_config(tmp_path, cfg, name="piped.yaml")
    want, got = _train(plain.run_dir), _train(piped.run_dir)
    assert got[2]["pipeline/chunks"] == 3.0  # decode_batch_size 1: one chunk per rollout
    assert got[2]["time/rollout_wait_s"] >= 0 and got[2]["time/pipeline_overlap_s"] >= 0
    assert "pipeline/chunks" not in want[2] and "pipeline/chunks" not in got[1]  # Channel A never rolls out
    for s in (1, 2):  # greedy rollouts: the same completions, targets, packs and losses
        for k in ("loss", "loss/ce", "loss/coord", "rollout/gen_new_tokens_total", "learn/packs", "grad_norm"):
            if s == 1 and k.startswith("rollout/"):
                continue
            assert got[s][k] == pytest.approx(want[s][k], abs=1e-6), (s, k)
    assert _completions(piped.run_dir) == _completions(plain.run_dir)


def _completions(folder):
    rows = (json.loads(x) for x in (folder / "rollouts.jsonl").read_text(encoding="utf-8").splitlines())
    return [(r["sample_id"], r["completion_ids"]) for r in rows]


@pytest.mark.parametrize("ratio,steps,b_logged", [
    (0.05, 20, {20}),  # B at optimizer step 19 (logged as step 20)
    (0.85, 8, {2, 3, 4, 5, 6, 8}),  # A at optimizer steps 0 and 6 (logged 1 and 7)
])
def test_logged_channels_follow_the_reference_b_ratio_values(tmp_path, tiny, ratio, steps, b_logged):
    cfg = _ab(tiny, training__max_steps=steps)
    cfg["custom"]["extra"]["stage2_ab"]["schedule"] = {"b_ratio": ratio}
    cfg["custom"]["extra"]["rollout_matching"]["monitor_dump"] = {"enabled": False}
    logs = _train(run_config(tmp_path, cfg).run_dir)
    assert {s for s, m in logs.items() if m["stage2/channel_b"] == 1.0} == b_logged
    assert all(m["stage2/channel_a"] == 1.0 - m["stage2/channel_b"] for m in logs.values())
    assert logs[steps]["stage2_ab/b_ratio_realized"] == pytest.approx(len(b_logged) / steps)
