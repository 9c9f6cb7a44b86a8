"""Config -> the vLLM server-mode record (``coordexp.backends.vllm_server`` and ``coordexp.launch`` take it).

Rules that follow from several keys live here, once:

- ``vllm.sync.mode: auto`` is ``adapter`` when ``vllm.enable_lora`` else ``full``;
- ``vllm.server.infer_timeout_s`` null or <= 0 means no read timeout (``None``);
- the debug dump's ``every_steps`` / ``dump_first_step`` fall back to ``training.logging_steps`` /
  ``logging_first_step``, and a disabled dump is ``None``;
- the context the server must hold is ``vllm.max_model_len``, else ``global_max_length`` (``Derived``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs

from coordexp.backends.vllm_spec import effective_sync_mode
from coordexp.bind.transitions import _rollout_matching

if TYPE_CHECKING:
    from coordexp.config.schema_root import Config

SyncMode = Literal["full", "adapter"]


@attrs.frozen
class ServerEndpoint:
    """One server. ``servers[].group_port`` is not here: see coordexp.bind.unread (no NCCL group in vLLM 0.32 sync)."""

    base_url: str  # scheme://host:port, no trailing slash


@attrs.frozen
class DebugDumpPlan:
    every_steps: int
    dump_first_step: bool
    only_main: bool
    max_events: int  # 0 = unlimited
    max_samples: int
    max_chars: int  # <= 0 = no clipping
    out_dir: str | None  # None = <run folder>/vllm_server_debug


@attrs.frozen
class ServerPlan:
    servers: tuple[ServerEndpoint, ...]
    timeout_s: float  # health / preflight / weight-sync wait
    infer_timeout_s: float | None  # read timeout of one generate call; None = wait as long as it takes
    sync_mode: SyncMode
    fallback_to_full: bool
    enable_lora: bool
    max_model_len: int  # the context the server must hold (prompt + max_new_tokens fit in it)
    max_new_tokens: int
    model: str  # model.model: what the server must serve at start
    gpu_memory_utilization: float  # launcher: --gpu-memory-utilization
    max_num_seqs: int  # launcher: --max-num-seqs
    enforce_eager: bool  # launcher: --enforce-eager
    enable_prefix_caching: bool  # launcher: --[no-]enable-prefix-caching
    dtype: str  # model.torch_dtype, so the server computes in the learner's dtype
    seed: int  # training.seed: per-request sampling seeds derive from it through the rollout seed
    debug_dump: DebugDumpPlan | None


def bind_server(cfg: Config) -> ServerPlan | None:
    """The server-mode record, or ``None`` unless ``rollout_backend: vllm`` with ``vllm.mode: server``."""
    rm = _rollout_matching(cfg, "vllm server")
    if rm.rollout_backend != "vllm" or rm.vllm.mode != "server":
        return None
    v = rm.vllm
    s = v.server
    sync = effective_sync_mode(v.sync.mode, enable_lora=v.enable_lora)
    return ServerPlan(
        servers=tuple(ServerEndpoint(e.base_url) for e in s.servers),
        timeout_s=s.timeout_s,
        infer_timeout_s=s.infer_timeout_s if s.infer_timeout_s is not None and s.infer_timeout_s > 0 else None,
        sync_mode=sync,
        fallback_to_full=v.sync.fallback_to_full,
        enable_lora=v.enable_lora,
        max_model_len=v.max_model_len or cfg.global_max_length,
        max_new_tokens=rm.max_new_tokens,
        model=str(cfg.model.model),
        gpu_memory_utilization=v.gpu_memory_utilization,
        max_num_seqs=v.max_num_seqs,
        enforce_eager=v.enforce_eager,
        enable_prefix_caching=v.enable_prefix_caching,
        dtype=cfg.model.torch_dtype,
        seed=cfg.training.seed,
        debug_dump=_debug_dump(cfg),
    )


def _debug_dump(cfg: Config) -> DebugDumpPlan | None:
    d = _rollout_matching(cfg, "vllm server").vllm.server.debug_dump
    if not d.enabled:
        return None
    t = cfg.training
    return DebugDumpPlan(
        every_steps=max(1, d.every_steps if d.every_steps is not None else t.logging_steps),
        dump_first_step=d.dump_first_step if d.dump_first_step is not None else t.logging_first_step,
        only_main=d.only_world_process_zero,
        max_events=d.max_events,
        max_samples=d.max_samples,
        max_chars=d.max_chars,
        out_dir=d.out_dir,
    )
