"""A few real steps of each trainer variant through the machine on the tiny model."""

from __future__ import annotations

import json
import os
import signal

import pytest
from transformers import AutoModelForImageTextToText

from coordexp.executor import Executor
from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import read_jsonl, run_config


def _train_losses(folder):
    return {r.step: r.metrics["loss"] for r in read_log(folder / "logging.jsonl") if r.mode == "train"}


def test_rollout_matching_run_leaves_a_complete_run_folder(tmp_path, tiny, snapshot):
    summary = run_config(tmp_path, tiny())
    folder = summary.run_dir
    records = read_log(folder / "logging.jsonl")
    assert [(r.mode, r.step) for r in records] == [("eval", 0), ("train", 1), ("train", 2), ("eval", 2)]
    train = [r for r in records if r.mode == "train"]
    for r in train:
        assert r.metrics["loss"] > 0 and r.metrics["learn/segments"] == 2
        assert "rollout/gen_new_tokens_p90" in r.metrics and "time/rollout_generate_s" in r.metrics
    assert "eval_rollout/f1" in records[-1].metrics
    traces = read_jsonl(folder / "trace.jsonl")
    assert [(t["mode"], t["trace"]) for t in traces] == snapshot
    assert list((folder / "events").iterdir())
    assert sorted(p.name for p in (folder / "monitor_dumps").iterdir()) == [
        "step_000000.json", "step_000000.md", "step_000001.json", "step_000001.md"]
    rollouts = read_jsonl(folder / "rollouts.jsonl")
    assert len(rollouts) == 2 * 2 + 2 * 2  # two train steps of 2 + two evals of 2
    ckpt = summary.checkpoint
    assert ckpt is not None and ckpt.name == "checkpoint-2"
    model = AutoModelForImageTextToText.from_pretrained(str(ckpt), local_files_only=True)
    assert model.config.model_type == "qwen3_vl"


def test_stage2_ab_runs_both_channels(tmp_path, tiny, snapshot):
    summary = run_config(tmp_path, tiny("stage2_ab_training"))
    traces = read_jsonl(summary.run_dir / "trace.jsonl")
    assert [(t["mode"], t["channel"], t["trace"]) for t in traces] == snapshot
    train = [r for r in read_log(summary.run_dir / "logging.jsonl") if r.mode == "train"]
    assert [r.metrics["stage2/channel_a"] for r in train] == [1.0, 0.0]
    assert "rollout/gen_new_tokens_p90" not in train[0].metrics  # Channel A rolls nothing out
    assert "rollout/gen_new_tokens_p90" in train[1].metrics
    # step 0 (Channel A) was due for a monitor dump; it is written on step 1, the first step with rollouts
    dumps = sorted(p.name for p in (summary.run_dir / "monitor_dumps").glob("*.json"))
    assert dumps == ["step_000001.json"]
    dump = json.loads((summary.run_dir / "monitor_dumps" / dumps[0]).read_text(encoding="utf-8"))
    assert dump["meta"]["channel"] == "B" and dump["samples"] and dump["samples"][0]["rollout_text"]


def test_checkpoint_is_a_model_for_a_new_run(tmp_path, tiny):
    first = run_config(tmp_path, tiny())
    cfg = tiny(model={"model": str(first.checkpoint), "torch_dtype": "float32", "attn_impl": "sdpa"})
    cfg["training"]["run_name"] = "second"
    cfg["training"]["max_steps"] = 1
    second = run_config(tmp_path, cfg, name="second.yaml")
    assert second.steps == 1


def _ctrl_c_after(monkeypatch, steps: int) -> None:
    """Press Ctrl-C (a real SIGINT to this process) once ``steps`` optimizer steps are done."""
    original = Executor.run_step

    def run_step(self, step):
        state = original(self, step)
        if step + 1 == steps:
            os.kill(os.getpid(), signal.SIGINT)
        return state

    monkeypatch.setattr(Executor, "run_step", run_step)


@pytest.mark.parametrize("mode", ["step", "carry"])
def test_ctrl_c_then_resume_gives_the_losses_of_an_uninterrupted_run(tmp_path, tiny, monkeypatch, mode):
    cfg = tiny(training__max_steps=4, training__save_strategy="no", training__eval_strategy="no",
               training__packing_mode=mode, training__effective_batch_size=3)
    straight = run_config(tmp_path, cfg, name="straight.yaml")
    cfg["training"]["run_name"] = "cut"
    with monkeypatch.context() as m:
        _ctrl_c_after(m, 2)
        cut = run_config(tmp_path, cfg, name="cut.yaml")
    assert cut.interrupted and cut.steps == 2 and cut.checkpoint.name == "checkpoint-2"
    resumed = run_config(tmp_path, cfg, name="cut.yaml", resume=cut.run_dir)
    assert resumed.steps == 4 and not resumed.interrupted
    want, got = _train_losses(straight.run_dir), _train_losses(cut.run_dir)
    assert sorted(got) == [1, 2, 3, 4]
    for step in (3, 4):
        assert got[step] == pytest.approx(want[step], abs=1e-6)
    seen = {r.step: r.metrics["train/samples_seen"] for r in read_log(cut.run_dir / "logging.jsonl") if r.mode == "train"}
    assert seen == {r.step: r.metrics["train/samples_seen"]
                    for r in read_log(straight.run_dir / "logging.jsonl") if r.mode == "train"}
