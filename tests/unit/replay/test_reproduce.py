"""Replaying a run's own rollouts.jsonl reproduces its logged rollout metrics and every step's targets checksum."""

from __future__ import annotations

import json

import pytest

from coordexp.replay.cli import NOT_REPLAYED, main
from tests.integration.conftest import read_jsonl, run_config, tiny_config


@pytest.mark.slow
@pytest.mark.parametrize(("variant", "ordering"), [("stage2_ab_training", "sorted"), ("rollout_matching_sft", "random")])
def test_replay_reproduces_the_training_logs_exactly(tmp_path, capsys, variant, ordering):
    # AB: log windows that hold Channel-A steps; random GT order: the epoch of each step comes from the plan
    cfg = tiny_config(tmp_path, variant, training__max_steps=4, training__logging_steps=3, training__eval_steps=4,
                      custom__object_ordering=ordering)
    run_dir = run_config(tmp_path, cfg).run_dir
    out = tmp_path / "replay"
    assert main(["--rollouts", str(run_dir), "--out", str(out), "--quiet"]) == 0
    assert "reproduced exactly" in capsys.readouterr().out

    logged = {(r["mode"], r["step"]): r["metrics"] for r in read_jsonl(run_dir / "logging.jsonl")}
    replayed = read_jsonl(out / "replay_log.jsonl")
    assert {(r["mode"], r["step"]) for r in replayed} == {k for k, m in logged.items()
                                                          if any(x.startswith(("rollout/", "eval_rollout/")) for x in m)}
    for rec in replayed:
        prefix = "rollout/" if rec["mode"] == "train" else "eval_rollout/"
        theirs = {k: v for k, v in logged[(rec["mode"], rec["step"])].items()
                  if k.startswith(prefix) and k not in NOT_REPLAYED}
        ours = {k: v for k, v in rec["metrics"].items() if k.startswith(prefix)}
        assert len(theirs) > 20 and ours == theirs

    trained = {r["step"]: r["targets_sha"] for r in read_jsonl(run_dir / "trace.jsonl") if "targets_sha" in r}
    again = {r["step"]: r["targets_sha"] for r in read_jsonl(out / "trace.jsonl") if "targets_sha" in r}
    assert trained and again == trained
    assert all(r["trace"][-2:] == ["Pack", "Log"] for r in read_jsonl(out / "trace.jsonl") if r["mode"] == "train")
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["diagnosis/samples"] == len(read_jsonl(run_dir / "rollouts.jsonl"))


@pytest.mark.slow
def test_compare_prints_the_deltas_of_another_matching_config(tmp_path, capsys):
    import yaml

    run_dir = run_config(tmp_path, tiny_config(tmp_path, training__max_steps=2)).run_dir
    other = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8"))
    other["custom"]["extra"]["rollout_matching"]["max_new_tokens"] = 12
    (tmp_path / "c2.yaml").write_text(yaml.safe_dump(other), encoding="utf-8")
    assert main(["--rollouts", str(run_dir), "--out", str(tmp_path / "r"), "--compare", str(tmp_path / "c2.yaml"),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "rollout/max_new_tokens: 24 -> 12 (-12)" in printed
    assert (tmp_path / "r" / "compare" / "metrics.json").is_file()
