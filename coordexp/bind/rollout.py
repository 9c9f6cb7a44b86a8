"""Config -> the rollout records: the stop rules (``coordexp.core.repeat``) and the backends' decoding.

Like ``coordexp.bind.transitions``, these functions read only attributes of the root ``Config`` (so the
key-reach test can trace them) and put no default of their own into the records. Three rules live here
because they follow from several keys at once:

- the decode mode a backend sees is ``beam`` when ``decode_mode: beam``, else ``sampling`` when
  ``decoding.temperature > 0``, else ``greedy`` (the schema's ``decode_mode`` only says beam or not);
- ``num_return_sequences: null`` means one candidate per beam (reference rollout 10.1);
- ``desc_monitor.every_steps: 0`` means every ``training.logging_steps`` steps (reference rollout 11.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from coordexp.backends.protocol import DecodingConfig
from coordexp.backends.vllm_spec import VllmSpec
from coordexp.bind.transitions import _rollout_matching
from coordexp.config.derive import Derived
from coordexp.core.desc_agreement import DescMonitorSettings
from coordexp.core.repeat import StopRulesConfig

if TYPE_CHECKING:
    from coordexp.config.schema_root import Config


def bind_stop_rules(cfg: Config) -> StopRulesConfig:
    """``rollout_matching.repeat_terminate.*`` (the duplicate rule's threshold is shared with the prefix policy)."""
    rt = _rollout_matching(cfg, "stop rules").repeat_terminate
    dup = rt.duplicate_object
    return StopRulesConfig(
        enabled=rt.enabled,
        min_new_tokens=rt.min_new_tokens,
        max_consecutive_token_repeats=rt.max_consecutive_token_repeats,
        ngram_size=rt.ngram_size,
        ngram_repeats=rt.ngram_repeats,
        max_object_keys=rt.max_object_keys,
        duplicate_object=dup.enabled,
        duplicate_iou_threshold=dup.iou_threshold,
        duplicate_same_desc=dup.same_desc,
    )


def bind_decoding(cfg: Config) -> DecodingConfig:
    """The decoding knobs every rollout backend reads."""
    rm = _rollout_matching(cfg, "decoding")
    sampling = rm.decoding.temperature > 0
    mode = "beam" if rm.decode_mode == "beam" else "sampling" if sampling else "greedy"
    beams = rm.num_beams
    return DecodingConfig(
        decode_mode=mode,
        num_beams=beams,
        num_return_sequences=beams if rm.num_return_sequences is None else rm.num_return_sequences,
        temperature=rm.decoding.temperature,
        top_p=rm.decoding.top_p,
        top_k=rm.decoding.top_k,
        repetition_penalty=rm.repetition_penalty,
        max_new_tokens=rm.max_new_tokens,
        decode_batch_size=rm.decode_batch_size,
    )


def bind_desc_monitor(cfg: Config) -> DescMonitorSettings:
    """``rollout_matching.desc_monitor.*``, every key read even when the monitor is off (one record shape)."""
    dm = _rollout_matching(cfg, "desc monitor").desc_monitor
    every = dm.every_steps if dm.every_steps > 0 else cfg.training.logging_steps
    return DescMonitorSettings(
        enabled=dm.enabled,
        mode=dm.mode,
        every_steps=every,
        max_pairs=dm.max_pairs,
        semantic_threshold=dm.semantic_threshold,
        semantic_model=dm.semantic_model,
        semantic_device=dm.semantic_device,
        semantic_batch_size=dm.semantic_batch_size,
        semantic_max_length=dm.semantic_max_length,
    )


def bind_vllm(cfg: Config, derived: Derived) -> VllmSpec:
    """The vLLM engine knobs (``vllm.*``, ``offload.*``), read whatever the backend so that a dry run shows them.

    ``max_model_len`` is ``derived.vllm_max_model_len`` (None unless the backend is vLLM); offload is
    effective only when ``offload.enabled`` and its own switch are both on.
    """
    rm = _rollout_matching(cfg, "vllm")
    v, off = rm.vllm, rm.offload
    offload_on, model_off, optimizer_off = off.enabled, off.offload_model, off.offload_optimizer
    return VllmSpec(
        mode=v.mode,
        max_model_len=derived.vllm_max_model_len,
        tensor_parallel_size=v.tensor_parallel_size,
        gpu_memory_utilization=v.gpu_memory_utilization,
        enable_lora=v.enable_lora,
        load_format=v.load_format,
        enable_prefix_caching=v.enable_prefix_caching,
        sleep_level=v.sleep_level,
        enforce_eager=v.enforce_eager,
        disable_custom_all_reduce=v.disable_custom_all_reduce,
        max_num_seqs=v.max_num_seqs,
        infer_batch_size=v.infer_batch_size,
        sync_mode=v.sync.mode,
        sync_fallback_to_full=v.sync.fallback_to_full,
        offload_model=offload_on and model_off,
        offload_optimizer=offload_on and optimizer_off,
        seed=cfg.training.seed,
        limit_mm_per_prompt=v.limit_mm_per_prompt,
        max_num_batched_tokens=v.max_num_batched_tokens,
        enable_chunked_prefill=v.enable_chunked_prefill,
        disable_chunked_mm_input=v.disable_chunked_mm_input,
        skip_mm_profiling=v.skip_mm_profiling,
        kv_cache_dtype=v.kv_cache_dtype,
        cpu_offload_gb=v.cpu_offload_gb,
        mm_encoder_tp_mode=v.mm_encoder_tp_mode,
        distributed_executor_backend=v.distributed_executor_backend,
        swap_space=v.swap_space,
    )
