"""A matching knob in the YAML changes what training logs (the legacy accepted such keys and ignored them)."""

from __future__ import annotations

import pytest

from coordexp.telemetry.sinks import read_log
from tests.integration.conftest import run_config


def _teach_the_format(tmp_path, tiny):
    """Channel A only (GT teacher forcing, i.e. Stage-1) on a few images until the model answers in objects."""
    cfg = tiny("stage2_ab_training", training__max_steps=150, training__effective_batch_size=2,
               training__learning_rate=3e-3, training__eval_strategy="no", training__save_strategy="steps",
               training__save_steps=150, custom__train_jsonl="synthetic://shapes?n=2&seed=0&max_objects=2",
               tuner={"train_type": "full"})
    cfg["custom"]["extra"]["stage2_ab"]["schedule"] = {"pattern": ["A"]}
    cfg["training"]["run_name"] = "stage1"
    return run_config(tmp_path, cfg, name="stage1.yaml").checkpoint


@pytest.mark.slow
def test_candidate_top_k_changes_the_logged_match_counts(tmp_path, tiny):
    checkpoint = _teach_the_format(tmp_path, tiny)
    logged = {}
    for k in (1, 4):
        cfg = tiny(tuner={"train_type": "full"}, model={"model": str(checkpoint), "torch_dtype": "float32", "attn_impl": "packed"},
                   training__max_steps=1, training__eval_strategy="no", training__save_strategy="no",
                   custom__train_jsonl="synthetic://shapes?n=2&seed=0&max_objects=2")
        cfg["custom"]["extra"]["rollout_matching"].update(candidate_top_k=k, max_new_tokens=96)
        cfg["training"]["run_name"] = f"k{k}"
        summary = run_config(tmp_path, cfg, name=f"k{k}.yaml")
        [train] = [r for r in read_log(summary.run_dir / "logging.jsonl") if r.mode == "train"]
        logged[k] = train.metrics
    assert logged[1]["rollout/valid_pred_objects"] > 0  # the model answers in objects, so matching has work
    assert logged[1]["rollout/valid_pred_objects"] == logged[4]["rollout/valid_pred_objects"]
    assert logged[1]["rollout/candidate_pairs"] < logged[4]["rollout/candidate_pairs"]
