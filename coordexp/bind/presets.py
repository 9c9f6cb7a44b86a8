"""The smallest valid config of each trainer variant, for tools that need records without a config file.

``inspect --gt``, ``bench core``, the spec runners and tests build their transition records from this
(``bind_match(minimal_config("rollout_matching_sft"))``) rather than from defaults of their own, so every value
they do not set explicitly is the schema default. The mapping below holds only what the schema requires, plus,
for stage2_ab_training, a schedule that makes every step Channel-B (the channel whose rollouts these tools
show) in micro mode, so no packing settings are needed.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from coordexp.config import Config, load_config_data, validate
from coordexp.errors import ConfigError, ConfigWarning

_BASE: dict[str, Any] = {
    "model": {"model": "tiny"},
    "training": {"eval_strategy": "no"},
    "custom": {"train_jsonl": "synthetic://shapes?n=1&seed=0", "extra": {"rollout_matching": {"rollout_backend": "hf"}}},
}
_AB_EXTRA: dict[str, Any] = {"schedule": {"pattern": ["B"]}, "channel_b": {"mode": "micro"}}
VARIANTS = ("rollout_matching_sft", "stage2_ab_training")
# the ``--preset`` choices of ``inspect --gt`` and ``bench core``: the BuildTarget switches of each variant
PRESETS = {"rollout_matching": "rollout_matching_sft", "stage2_ab": "stage2_ab_training"}
RM = "custom.extra.rollout_matching"


def tool_config(preset: str, *, iou_mode: str, prefix_policy: str) -> Config:
    """The config behind a tool's ``--preset/--iou-mode/--prefix-policy`` flags (the rest: schema defaults)."""
    return minimal_config(PRESETS[preset], (f"{RM}.iou_mode={iou_mode}", f"{RM}.prefix_policy={prefix_policy}"))


def minimal_config(variant: str, overrides: Sequence[str] = ()) -> Config:
    """A validated config of ``variant`` with ``--set`` style ``overrides`` (``"custom.extra....iou_mode=raster"``)."""
    if variant not in VARIANTS:
        raise ConfigError([f"custom.trainer_variant: unknown variant {variant!r}. Fix: use one of {', '.join(VARIANTS)}"])
    data: dict[str, Any] = {
        "model": dict(_BASE["model"]),
        "training": dict(_BASE["training"]),
        "custom": {**_BASE["custom"], "trainer_variant": variant,
                   "extra": {"rollout_matching": dict(_BASE["custom"]["extra"]["rollout_matching"])}},
    }
    if variant == "stage2_ab_training":
        data["training"]["effective_batch_size"] = 1
        data["custom"]["extra"]["stage2_ab"] = {k: dict(v) for k, v in _AB_EXTRA.items()}
    loaded = load_config_data(data, overrides=overrides, source=f"<minimal {variant}>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        validate(loaded.config, env={}, display=loaded.display, source=f"<minimal {variant}>")
    return loaded.config
