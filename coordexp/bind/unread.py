"""The one table of schema keys that no code path reads yet, each with the reason.

The key-reach test (``tests/unit/bind/test_reach.py``, mechanism in ``coordexp.bind.reach``) fails for a key
that nothing reads unless it is listed here, and also for a key listed here that something does read: when
code starts reading a key (through ``coordexp.bind`` or a module's ``CONFIG_READS``), its line here goes.
A key listed here is accepted by the config and does nothing today; the reason says until when.
"""

from __future__ import annotations

from collections.abc import Mapping

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"


def _keys(prefix: str, *names: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{n}" for n in names)


DEEPSPEED = ("the executor trains with DDP under torchrun, not DeepSpeed; the config refuses any value but null, "
             "and the key stays only so that legacy configs get that clear refusal instead of an unknown-key error")
VLLM = "the vLLM rollout backends (colocate / server) are not built yet (issue 12)"
AB_LOSSES = ("Channel-A soft self-context and the AB geometry / coord regularizer losses are not wired into the learner "
             "yet (Channel-A is plain GT teacher forcing in issue 8; soft self-context comes in a later issue)")

_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("by design only the config's length-budget check reads it (an estimate of the prompt length, nothing at "
     "runtime)", (f"{RM}.prompt_len_estimate",)),
    ("the desc monitor (reference rollout 11.2, metrics only) is not built yet", _keys(
        f"{RM}.desc_monitor", "enabled", "mode", "every_steps", "max_pairs", "semantic_threshold", "semantic_model",
        "semantic_device", "semantic_batch_size", "semantic_max_length")),
    ("offload acts only around colocate vLLM rollouts; " + VLLM,
     _keys(f"{RM}.offload", "enabled", "offload_model", "offload_optimizer")),
    (VLLM, (
        *_keys(f"{RM}.vllm", "mode", "tensor_parallel_size", "gpu_memory_utilization", "enable_lora", "load_format",
               "enable_prefix_caching", "sleep_level", "enforce_eager", "disable_custom_all_reduce", "max_num_seqs",
               "max_num_batched_tokens", "distributed_executor_backend", "infer_batch_size", "enable_chunked_prefill",
               "disable_chunked_mm_input", "skip_mm_profiling", "kv_cache_dtype", "cpu_offload_gb", "swap_space",
               "limit_mm_per_prompt", "mm_encoder_tp_mode", "sync.mode", "sync.fallback_to_full"),
        *_keys(f"{RM}.vllm.server", "servers[].base_url", "servers[].group_port", "timeout_s", "infer_timeout_s"),
        *_keys(f"{RM}.vllm.server.debug_dump", "enabled", "every_steps", "dump_first_step", "only_world_process_zero",
               "max_events", "max_samples", "max_chars", "out_dir"),
        f"{AB}.channel_b.enable_pipeline",
    )),
    (AB_LOSSES, _keys(AB, "n_softctx_iter", "softctx_grad_mode", "softctx_temperature", "bbox_smoothl1_weight",
                      "bbox_ciou_weight", "coord_ce_weight", "coord_el1_weight", "coord_ehuber_weight",
                      "coord_huber_delta", "coord_entropy_weight")),
    (DEEPSPEED, ("training.deepspeed",)),
)


def _table() -> dict[str, str]:
    out: dict[str, str] = {}
    for reason, keys in _GROUPS:
        for key in keys:
            if key in out:
                raise ValueError(f"coordexp.bind.unread lists {key!r} twice")
            out[key] = reason
    return out


UNREAD: Mapping[str, str] = _table()  # dotted key -> why nothing reads it yet
