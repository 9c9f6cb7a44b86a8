"""The same run under torchrun (2 processes, DDP over gloo on CPU) logs the single-process losses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import run_config


def _losses(folder: Path) -> dict[int, float]:
    return {r.step: r.metrics["loss"] for r in read_log(folder / "logging.jsonl") if r.mode == "train"}


@pytest.mark.slow
def test_two_ranks_log_the_single_process_losses(tmp_path, tiny):
    cfg = tiny(training__max_steps=2, training__eval_strategy="steps", training__save_strategy="no",
               training__effective_batch_size=4)
    single = run_config(tmp_path, cfg, name="single.yaml")
    cfg["training"]["run_name"] = "ddp"
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "coordexp.run", "--config", str(path)],
        capture_output=True, text=True, timeout=900, env=env, cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    folder = Path(cfg["training"]["output_dir"]) / "ddp"
    want, got = _losses(single.run_dir), _losses(folder)
    assert sorted(got) == sorted(want) == [1, 2]
    for step in want:
        assert got[step] == pytest.approx(want[step], rel=1e-4)
    records = read_log(folder / "logging.jsonl")
    train = [r for r in records if r.mode == "train"]
    assert all(r.metrics["learn/segments"] == 4 for r in train)  # both ranks' segments, reduced
    evals = [r for r in records if r.mode == "eval"]
    assert evals[-1].metrics["eval_rollout/samples"] == 2  # the eval set, sharded and summed back
    assert not list(folder.parent.glob("ddp-*"))  # one run folder, chosen by rank 0
