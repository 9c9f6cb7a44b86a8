"""The colocate vLLM engine as the backend reads it: ``rollout_matching.vllm.*`` and ``offload.*`` (bound once).

Importing it loads neither torch nor vLLM. ``coordexp.bind.rollout.bind_vllm`` builds it from a config;
``engine_args`` turns it into ``vllm.LLM`` keyword arguments, and every knob either reaches the engine or
is refused here with the key and the fix (a knob this vLLM release lacks is never dropped silently).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import attrs

from coordexp.errors import ConfigError

VLLM = "custom.extra.rollout_matching.vllm"
SYNC_MODES = ("full", "adapter", "auto")


def effective_sync_mode(mode: str, *, enable_lora: bool) -> str:
    """``vllm.sync.mode`` resolved: ``auto`` is ``adapter`` when the engine serves LoRA, else ``full``."""
    if mode != "auto":
        return mode
    return "adapter" if enable_lora else "full"
# knobs passed to vllm.LLM as they are, when set (None = vLLM's default)
_PASSTHROUGH = (
    "max_num_batched_tokens", "enable_chunked_prefill", "disable_chunked_mm_input", "skip_mm_profiling",
    "kv_cache_dtype", "cpu_offload_gb", "mm_encoder_tp_mode", "distributed_executor_backend",
)  # fmt: skip
# knobs of older vLLM releases that the installed engine no longer takes: refused when set
_REMOVED = {"swap_space": "vLLM >= 0.12 has no CPU swap space for preempted requests; remove the key"}


@attrs.frozen
class VllmSpec:
    """Every ``vllm.*`` / ``offload.*`` value the colocate backend uses (defaults live in the schema)."""

    mode: str  # colocate | server
    max_model_len: int | None  # derived (vllm.max_model_len or global_max_length); None unless backend vllm
    tensor_parallel_size: int
    gpu_memory_utilization: float
    enable_lora: bool
    load_format: str | None  # None: `auto` (the engine starts from the exported current weights)
    enable_prefix_caching: bool
    sleep_level: int  # 0 = never sleep between rollouts
    enforce_eager: bool
    disable_custom_all_reduce: bool
    max_num_seqs: int
    infer_batch_size: int | None  # <= 0 / None: one engine call per decode_batch_size chunk
    sync_mode: str  # full | adapter | auto (= adapter iff enable_lora)
    sync_fallback_to_full: bool
    offload_model: bool  # effective (offload.enabled and offload.offload_model)
    offload_optimizer: bool
    seed: int  # training.seed: the engine's default sampling seed
    limit_mm_per_prompt: Mapping[str, int] | None = None
    max_num_batched_tokens: int | None = None
    enable_chunked_prefill: bool | None = None
    disable_chunked_mm_input: bool | None = None
    skip_mm_profiling: bool | None = None
    kv_cache_dtype: str | None = None
    cpu_offload_gb: float | None = None
    mm_encoder_tp_mode: str | None = None
    distributed_executor_backend: str | None = None
    swap_space: float | None = None

    @property
    def wants_adapter_sync(self) -> bool:
        return effective_sync_mode(self.sync_mode, enable_lora=self.enable_lora) == "adapter"

    def chunk_size(self, decode_batch_size: int) -> int:
        """Requests per engine call: decode_batch_size, split further by a positive infer_batch_size."""
        if self.infer_batch_size is not None and self.infer_batch_size > 0:
            return min(decode_batch_size, self.infer_batch_size)
        return decode_batch_size


def engine_args(spec: VllmSpec, *, model_dir: str, dtype: str, sleep_mode: bool, lora_rank: int | None) -> dict[str, Any]:
    """``vllm.LLM`` keyword arguments for ``spec`` serving ``model_dir``.

    ``sleep_mode``: whether the platform sleeps (``vllm.sleep_level`` > 0 and not CPU);
    ``lora_rank``: the adapter's rank when adapters are pushed (enables LoRA in the engine).
    """
    if spec.max_model_len is None:
        raise ConfigError([f"custom.extra.rollout_matching.rollout_backend: the vLLM engine is built only for "
                           f"rollout_backend: vllm (no {VLLM}.max_model_len was derived). Fix: set it to vllm"])
    for key, why in _REMOVED.items():
        if getattr(spec, key) is not None:
            raise ConfigError([f"{VLLM}.{key}: the installed vLLM does not take it ({why})"])
    if spec.load_format == "dummy":
        raise ConfigError([f"{VLLM}.load_format: `dummy` starts the engine with random weights that this vLLM cannot "
                           "replace from disk (its in-place reload has no dummy loader). Fix: null (= auto); the "
                           "colocate engine starts from the learner's current weights anyway"])
    lora = lora_rank is not None
    load_format = spec.load_format or "auto"
    args: dict[str, Any] = {
        "model": model_dir,
        "tokenizer": model_dir,
        "dtype": dtype,
        "max_model_len": spec.max_model_len,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "gpu_memory_utilization": spec.gpu_memory_utilization,
        "load_format": load_format,
        "enable_prefix_caching": spec.enable_prefix_caching,
        "enforce_eager": spec.enforce_eager,
        "disable_custom_all_reduce": spec.disable_custom_all_reduce,
        "max_num_seqs": spec.max_num_seqs,
        "seed": spec.seed,
        "enable_sleep_mode": sleep_mode,
        "enable_lora": spec.enable_lora or lora,
    }
    if args["enable_lora"]:
        # the aligner (vision-language connector) of a coordexp adapter is LoRA'd too: without this flag
        # vLLM would ignore that part with only a warning
        args.update(max_lora_rank=lora_rank or 8, max_loras=1, enable_tower_connector_lora=True)
    if spec.limit_mm_per_prompt is not None:
        args["limit_mm_per_prompt"] = dict(spec.limit_mm_per_prompt)
    args.update({k: getattr(spec, k) for k in _PASSTHROUGH if getattr(spec, k) is not None})
    return args
