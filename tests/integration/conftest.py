"""Tiny end-to-end runs: a YAML config written to a temp folder and trained with the real CLI code path."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordexp.config import load
from coordexp.train import Summary, train


def tiny_config(tmp_path: Path, variant: str = "rollout_matching_sft", **sections: Any) -> dict[str, Any]:
    """The smallest run that exercises every stage: 4 samples, 2 per step, short rollouts, eval on 2."""
    extra: dict[str, Any] = {"rollout_matching": {
        "rollout_backend": "hf", "decode_batch_size": 2, "max_new_tokens": 24,
        "repeat_terminate": {"enabled": True, "min_new_tokens": 4},
        "monitor_dump": {"enabled": True, "every_steps": 1, "dump_first_step": True},
        "record_rollouts": True,
    }}
    if variant == "stage2_ab_training":
        extra["stage2_ab"] = {"schedule": {"pattern": ["A", "B"]}, "channel_b": {"mode": "step"}}
    cfg: dict[str, Any] = {
        "global_max_length": 1024,
        "model": {"model": "tiny", "torch_dtype": "float32", "attn_impl": "sdpa"},
        "tuner": {"train_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "training": {
            "per_device_train_batch_size": 1, "effective_batch_size": 2, "dataloader_drop_last": True,
            "packing": True, "packing_buffer": 16, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
            "bf16": False, "gradient_checkpointing": False, "max_steps": 2, "logging_steps": 1,
            "eval_strategy": "steps", "eval_steps": 2, "save_strategy": "steps", "save_steps": 2,
            "output_dir": str(tmp_path / "out"), "run_name": "run", "seed": 3,
        },
        "custom": {"trainer_variant": variant, "train_jsonl": "synthetic://shapes?n=4&seed=0",
                   "val_jsonl": "synthetic://shapes?n=2&seed=1", "extra": extra},
    }
    for dotted, value in sections.items():
        node = cfg
        *path, leaf = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[leaf] = value
    return cfg


def run_config(tmp_path: Path, cfg: dict[str, Any], *, name: str = "config.yaml", resume: Path | None = None) -> Summary:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return train(load(str(path)).config, config_path=path, resume=resume)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture
def tiny(tmp_path):
    return lambda variant="rollout_matching_sft", **kw: tiny_config(tmp_path, variant, **kw)
