"""Shared builders: the smallest valid configs of each trainer variant, and error/warning helpers."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import pytest
import yaml

from coordexp.config import load_config_data, validate
from coordexp.errors import ConfigError

AB_MINIMAL: dict[str, Any] = {
    "model": {"model": "tiny"},
    "training": {"effective_batch_size": 4, "packing": True, "dataloader_drop_last": True, "eval_strategy": "no"},
    "custom": {
        "trainer_variant": "stage2_ab_training",
        "train_jsonl": "synthetic://shapes?n=8&seed=0",
        "extra": {"rollout_matching": {"rollout_backend": "hf"}, "stage2_ab": {"schedule": {"b_ratio": 0.5}}},
    },
}
SFT_MINIMAL: dict[str, Any] = {
    "model": {"model": "tiny"},
    "training": {"eval_strategy": "no"},
    "custom": {"trainer_variant": "rollout_matching_sft", "train_jsonl": "synthetic://shapes?n=8&seed=0",
               "extra": {"rollout_matching": {"rollout_backend": "hf"}}},
}


def ab() -> dict[str, Any]:
    """A fresh minimal AB mapping (tests change it through --set style overrides)."""
    return copy.deepcopy(AB_MINIMAL)


def check(data: dict[str, Any], *overrides: str, world_size: int | None = None) -> list[str]:
    """Load + validate; return warnings, raise ConfigError on problems."""
    env = {} if world_size is None else {"WORLD_SIZE": str(world_size)}
    loaded = load_config_data(copy.deepcopy(data), overrides=overrides)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return validate(loaded.config, env=env, display=loaded.display)


def errors(data: dict[str, Any], *overrides: str, world_size: int | None = None) -> list[str]:
    """The ConfigError messages (fails the test when the config is accepted)."""
    with pytest.raises(ConfigError) as info:
        check(data, *overrides, world_size=world_size)
    return info.value.messages


def one_error(data: dict[str, Any], *overrides: str, world_size: int | None = None) -> str:
    found = errors(data, *overrides, world_size=world_size)
    assert len(found) == 1, found
    return found[0]


def write_yaml(folder: Path, name: str, data: Any) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
