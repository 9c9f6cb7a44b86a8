"""Channel-B training steps with ``rollout_backend: vllm`` + ``vllm.mode: colocate`` through the executor."""

from __future__ import annotations

import math

import yaml

from coordexp.config import load
from coordexp.telemetry.sinks import read_log
from coordexp.train import build_executor
from tests.integration.conftest import read_jsonl, tiny_config


def test_rollout_matching_steps_with_the_colocate_backend(tmp_path, servable_dir):
    cfg = tiny_config(tmp_path, model={"model": str(servable_dir), "torch_dtype": "float32", "attn_impl": "sdpa"})
    rm = cfg["custom"]["extra"]["rollout_matching"]
    rm.update(rollout_backend="vllm", vllm={"mode": "colocate", "max_model_len": 1024, "enforce_eager": True,
                                            "max_num_seqs": 4, "sleep_level": 1},
              offload={"enabled": True, "offload_model": True, "offload_optimizer": True})  # CPU: logged no-ops
    cfg["training"]["save_strategy"] = "no"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    folder = tmp_path / "run"
    ex = build_executor(load(str(path)).config, folder)
    backend = ex.rt.backend
    try:
        assert backend.name == "vllm_colocate"
        ex.train()
        assert backend.syncs == 2  # one weight push before the rollouts that follow each optimizer step
        assert backend.sync_seconds > 0 and backend.start_seconds > 0
    finally:
        backend.close()
    assert not backend.folders.root.exists()  # the weight exports do not outlive the engine
    train = [r for r in read_log(folder / "logging.jsonl") if r.mode == "train"]
    assert [r.step for r in train] == [1, 2]
    for r in train:
        assert math.isfinite(r.metrics["loss"]) and r.metrics["loss"] > 0
        assert "rollout/gen_new_tokens_p90" in r.metrics
    rollouts = read_jsonl(folder / "rollouts.jsonl")
    assert len(rollouts) == 2 * 2 + 2 * 2  # two train steps of 2 + two evals of 2
