"""The colocate vLLM record: config -> VllmSpec -> vllm.LLM arguments, and the stop-rule request argument."""

from __future__ import annotations

import pytest

from coordexp.backends.stop_rules_args import STOP_RULES_ARG, parse_stop_rules_arg, stop_rules_args
from coordexp.backends.vllm_spec import engine_args
from coordexp.bind import bind, minimal_config
from coordexp.core.repeat import StopRulesConfig
from coordexp.errors import ConfigError

RM = "custom.extra.rollout_matching"


def _spec(*overrides: str):
    cfg = minimal_config("rollout_matching_sft", (f"{RM}.rollout_backend=vllm", *overrides))
    return bind(cfg, env={}).vllm


def test_every_engine_knob_reaches_the_llm_arguments():
    spec = _spec(
        f"{RM}.vllm.max_model_len=3000", f"{RM}.vllm.gpu_memory_utilization=0.7", f"{RM}.vllm.max_num_seqs=4",
        f"{RM}.vllm.enforce_eager=true", f"{RM}.vllm.enable_prefix_caching=false", f"{RM}.vllm.max_num_batched_tokens=4096",
        f"{RM}.vllm.enable_chunked_prefill=true", f"{RM}.vllm.disable_chunked_mm_input=true",
        f"{RM}.vllm.skip_mm_profiling=true", f"{RM}.vllm.kv_cache_dtype=fp8", f"{RM}.vllm.cpu_offload_gb=2",
        f"{RM}.vllm.mm_encoder_tp_mode=weights", f"{RM}.vllm.limit_mm_per_prompt={{image: 1, video: 0}}",
        f"{RM}.vllm.distributed_executor_backend=mp", f"{RM}.vllm.load_format=safetensors",
        "training.seed=5",
    )  # fmt: skip
    args = engine_args(spec, model_dir="M", dtype="bfloat16", sleep_mode=True, lora_rank=None)
    assert args == {
        "model": "M", "tokenizer": "M", "dtype": "bfloat16", "max_model_len": 3000, "tensor_parallel_size": 1,
        "gpu_memory_utilization": 0.7, "load_format": "safetensors", "enable_prefix_caching": False,
        "enforce_eager": True, "disable_custom_all_reduce": True, "max_num_seqs": 4, "seed": 5,
        "enable_sleep_mode": True, "enable_lora": False, "limit_mm_per_prompt": {"image": 1, "video": 0},
        "max_num_batched_tokens": 4096, "enable_chunked_prefill": True, "disable_chunked_mm_input": True,
        "skip_mm_profiling": True, "kv_cache_dtype": "fp8", "cpu_offload_gb": 2.0, "mm_encoder_tp_mode": "weights",
        "distributed_executor_backend": "mp",
    }  # fmt: skip


def test_defaults_max_model_len_lora_and_offload():
    spec = _spec("global_max_length=2048", f"{RM}.vllm.enable_lora=true", f"{RM}.offload.offload_model=true")
    assert spec.max_model_len == 2048 and spec.load_format is None and not spec.offload_model  # offload.enabled off
    args = engine_args(spec, model_dir="M", dtype="float32", sleep_mode=False, lora_rank=8)
    assert args["load_format"] == "auto" and args["enable_lora"] and args["max_lora_rank"] == 8
    assert args["enable_tower_connector_lora"] and args["max_loras"] == 1
    on = _spec(f"{RM}.offload.enabled=true", f"{RM}.offload.offload_optimizer=true")
    assert (on.offload_model, on.offload_optimizer) == (False, True)


def test_sync_mode_and_batch_split():
    assert _spec(f"{RM}.vllm.enable_lora=true", f"{RM}.vllm.sync.mode=auto").wants_adapter_sync
    assert not _spec(f"{RM}.vllm.sync.mode=auto").wants_adapter_sync
    assert _spec(f"{RM}.vllm.infer_batch_size=2").chunk_size(4) == 2
    assert _spec(f"{RM}.vllm.infer_batch_size=0").chunk_size(4) == 4


@pytest.mark.parametrize(("override", "message"), [
    (f"{RM}.vllm.swap_space=4", "swap_space: the installed vLLM does not take it"),
    (f"{RM}.vllm.load_format=dummy", "load_format: `dummy`"),
])  # fmt: skip
def test_knobs_this_vllm_cannot_honour_are_refused(override, message):
    with pytest.raises(ConfigError, match=message):
        engine_args(_spec(override), model_dir="M", dtype="float32", sleep_mode=False, lora_rank=None)


def test_an_hf_run_has_no_engine_length_and_cannot_build_one():
    spec = bind(minimal_config("rollout_matching_sft", (f"{RM}.rollout_backend=hf",)), env={}).vllm
    assert spec.max_model_len is None
    with pytest.raises(ConfigError, match="only for rollout_backend: vllm"):
        engine_args(spec, model_dir="M", dtype="float32", sleep_mode=False, lora_rank=None)


RULES = StopRulesConfig(
    enabled=True, min_new_tokens=2, max_consecutive_token_repeats=3, ngram_size=4, ngram_repeats=2,
    max_object_keys=5, duplicate_object=True, duplicate_iou_threshold=0.9, duplicate_same_desc=False,
)  # fmt: skip


def test_the_stop_rule_argument_round_trips_as_json():
    import json

    arg = json.loads(json.dumps(stop_rules_args(RULES, [7, 2])))
    assert parse_stop_rules_arg(arg[STOP_RULES_ARG]) == (RULES, (2, 7))


@pytest.mark.parametrize(("change", "message"), [
    ({"enabled": "yes"}, "enabled must be true or false"),
    ({"ngram_size": -1}, "ngram_size must be an integer >= 0"),
    ({"max_object_keys": 0}, "max_object_keys must be null or an integer >= 1"),
    ({"duplicate_iou_threshold": 2}, r"duplicate_iou_threshold must be a number in \[0, 1\]"),
    ({"eos_ids": "2"}, "eos_ids must be a list of token ids"),
    ({"surprise": 1}, r"unknown fields \['surprise'\]"),
])  # fmt: skip
def test_a_malformed_stop_rule_argument_says_what_is_wrong(change, message):
    raw = {**stop_rules_args(RULES, [2])[STOP_RULES_ARG], **change}
    with pytest.raises(ValueError, match=message):
        parse_stop_rules_arg(raw)
