"""A tiny Stage-2 AB run with the soft self-context and the geometry terms on: every loss key reaches the log.

Channel A (step 0) runs the soft self-context forwards over GT boxes; Channel B (step 1) puts geometry on the
matched-prefix and FN boxes of its rollouts. Both steps log each ``loss/*`` geometry term, finite, and the step
loss is the one formula (CE + coord + the weighted geometry).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import read_jsonl, run_config

AB = {"n_softctx_iter": 2, "softctx_grad_mode": "em_detach", "coord_ctx_embed_mode": "st",
      "bbox_smoothl1_weight": 2.0, "bbox_ciou_weight": 1.0, "coord_el1_weight": 0.5, "coord_entropy_weight": 0.01}
TERMS = ("loss/bbox_smoothl1", "loss/bbox_ciou", "loss/coord_ce", "loss/coord_el1", "loss/coord_ehuber",
         "loss/coord_entropy", "loss/coord_reg", "loss/bbox_nonfinite")


@pytest.mark.slow
def test_ab_run_logs_every_geometry_term_on_both_channels(tmp_path, tiny):
    cfg = tiny("stage2_ab_training")
    cfg["custom"]["extra"]["stage2_ab"].update(AB)
    summary = run_config(tmp_path, cfg)
    train = [r for r in read_log(summary.run_dir / "logging.jsonl") if r.mode == "train"]
    assert [r.metrics["stage2/channel_a"] for r in train] == [1.0, 0.0]
    for r in train:
        m = r.metrics
        assert all(k in m and math.isfinite(m[k]) for k in TERMS), sorted(m)
        weighted = 2.0 * m["loss/bbox_smoothl1"] + m["loss/bbox_ciou"] + m["loss/coord_reg"]
        assert m["loss"] == pytest.approx(m["loss/ce"] + m["loss/coord"] + weighted, rel=1e-5)
        assert m["loss/coord_reg"] == pytest.approx(0.5 * m["loss/coord_el1"] + 0.01 * m["loss/coord_entropy"],
                                                    rel=1e-5)
    assert train[0].metrics["loss/bbox_smoothl1"] > 0  # Channel A: every GT box
    assert read_jsonl(summary.run_dir / "trace.jsonl")


@pytest.mark.slow
def test_soft_context_under_ddp_logs_the_single_process_losses(tmp_path, tiny):
    """Two ranks (DDP over gloo on CPU): the soft self-context's several forwards per backward reduce correctly."""
    cfg = tiny("stage2_ab_training", training__eval_strategy="no", training__save_strategy="no",
               training__effective_batch_size=4)
    cfg["custom"]["extra"]["stage2_ab"].update({**AB, "softctx_grad_mode": "unroll", "n_softctx_iter": 3})
    cfg["custom"]["extra"]["stage2_ab"]["schedule"] = {"pattern": ["A"]}
    single = run_config(tmp_path, cfg, name="single.yaml")
    cfg["training"]["run_name"] = "ddp"
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    torchrun = Path(sys.executable).with_name("torchrun")
    done = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "coordexp.run", "--config", str(path)],
        capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    want = {r.step: r.metrics for r in read_log(single.run_dir / "logging.jsonl") if r.mode == "train"}
    got = {r.step: r.metrics for r in read_log(Path(cfg["training"]["output_dir"]) / "ddp" / "logging.jsonl")
           if r.mode == "train"}
    assert sorted(got) == sorted(want) == [1, 2]
    for step, m in want.items():
        for key in ("loss", "loss/ce", "loss/bbox_smoothl1", "loss/bbox_ciou", "grad_norm"):
            assert got[step][key] == pytest.approx(m[key], rel=1e-4), (step, key)
