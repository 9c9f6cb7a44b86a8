"""Values derived from a config that several places need: world size, accumulation, lengths, budgets.

Derivation happens once, here, so the validator, the dry-run plan and (later) the trainer agree.
World size: ``training.world_size`` when set, else the ``WORLD_SIZE`` environment variable at validation
time (what torchrun sets), else 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping

import attrs

from coordexp.config.schema_root import Config
from coordexp.errors import ConfigError


@attrs.frozen
class Derived:
    world_size: int
    world_size_source: str  # "training.world_size" | "WORLD_SIZE" | "default"
    gradient_accumulation_steps: int  # micro-steps per optimizer step
    samples_per_step: int  # raw samples per optimizer step, all ranks
    rollouts_per_step: int | None  # Channel-B raw rollouts per optimizer step; None without rollouts
    packing_length: int | None  # tokens per packed row; None when packing is off
    packing_mode: str | None  # "carry" | "step"; None when packing is off
    vllm_max_model_len: int | None  # None unless a vLLM backend is used


def world_size(config: Config, env: Mapping[str, str] | None = None) -> tuple[int, str]:
    if config.training.world_size is not None:
        return config.training.world_size, "training.world_size"
    env = os.environ if env is None else env
    raw = env.get("WORLD_SIZE")
    if raw is None:
        return 1, "default"
    if not raw.strip().isdigit() or int(raw) < 1:
        raise ConfigError([f"WORLD_SIZE={raw!r} in the environment is not a positive integer. "
                           "Fix: unset it or set training.world_size."])
    return int(raw), "WORLD_SIZE"


def accumulation_steps(config: Config, world: int) -> int:
    """Explicit value, else from effective_batch_size (exact for AB, ceil otherwise), else 1."""
    t = config.training
    if t.gradient_accumulation_steps is not None:
        return t.gradient_accumulation_steps
    if t.effective_batch_size is None:
        return 1
    per_step = max(1, t.per_device_train_batch_size * world)
    return max(1, math.ceil(t.effective_batch_size / per_step))


def derive(config: Config, env: Mapping[str, str] | None = None) -> Derived:
    world, source = world_size(config, env)
    gas = accumulation_steps(config, world)
    samples = config.training.per_device_train_batch_size * world * gas
    rm, ab = config.rollout_matching, config.stage2_ab
    rollouts = None
    if rm is not None:
        explicit = ab.channel_b.rollouts_per_step if ab is not None else None
        rollouts = explicit if explicit is not None else (config.training.effective_batch_size or samples)
    max_model_len = None
    if rm is not None and rm.rollout_backend == "vllm":
        max_model_len = rm.vllm.max_model_len or config.global_max_length
    packing = config.global_max_length if config.training.packing else None
    mode = packing_mode(config) if config.training.packing else None
    return Derived(world, source, gas, samples, rollouts, packing, mode, max_model_len)


def channel_b_packing_mode(config: Config) -> str | None:
    """The packing scope that stage2_ab_training's Channel-B mode implies; None for rollout_matching_sft."""
    ab = config.stage2_ab
    if config.custom.trainer_variant != "stage2_ab_training" or ab is None:
        return None
    return "step" if ab.channel_b.mode == "step" else "carry"


def packing_mode(config: Config) -> str:
    """Explicit ``training.packing_mode``, else what Channel-B's mode implies, else the legacy ``carry``."""
    explicit = config.training.packing_mode
    if explicit is not None:
        return explicit
    return channel_b_packing_mode(config) or "carry"


def rollouts_share_learner_device(config: Config) -> bool:
    """Whether rollouts run on the learner's own device (hf, vLLM colocate) rather than on other GPUs."""
    rm = config.rollout_matching
    return rm is not None and (rm.rollout_backend != "vllm" or rm.vllm.mode != "server")
