"""Rules about decoding, stop rules, the vLLM backends, offload and length budgets."""

from __future__ import annotations

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived
from coordexp.config.schema_root import Config

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"
OFFLOAD_DEEPSPEED = (
    "rollout offload is not supported with DeepSpeed/ZeRO. Mitigations: disable rollout_matching.offload, "
    "switch rollout_backend=hf, or disable DeepSpeed (training.deepspeed: null)"
)


def decoding(config: Config, _d: Derived, out: Findings) -> None:
    """top_k is -1 (off) or >= 1; vLLM backends decode greedily (sampling goes through temperature)."""
    rm = config.rollout_matching
    if rm is None:
        return
    if rm.decoding.top_k != -1 and rm.decoding.top_k < 1:
        out.error(f"{RM}.decoding.top_k", f"must be -1 (off) or >= 1, got {rm.decoding.top_k}", "use -1 or e.g. 50")
    if rm.rollout_backend == "vllm" and rm.decode_mode != "greedy":
        out.error(f"{RM}.decode_mode", f"vLLM backends require `greedy`, got {rm.decode_mode!r}",
                  "use decode_mode: greedy (sample with decoding.temperature > 0) or rollout_backend: hf for beams")


def repeat_terminate(config: Config, _d: Derived, out: Findings) -> None:
    """Enabled stop rules must do something; configured rules must be enabled to matter."""
    rm = config.rollout_matching
    if rm is None:
        return
    rt, key = rm.repeat_terminate, f"{RM}.repeat_terminate"
    if rt.ngram_size > 0 and rt.ngram_repeats < 2:
        out.error(f"{key}.ngram_repeats", f"must be >= 2 when ngram_size > 0, got {rt.ngram_repeats}",
                  "use 2 (the default) or set ngram_size: 0")
    rules_on = (rt.max_consecutive_token_repeats > 0 or rt.ngram_size > 0 or rt.max_object_keys is not None
                or rt.duplicate_object.enabled)
    if rt.enabled and not rules_on:
        out.error(f"{key}.enabled", "is true but every rule is off, so nothing would ever stop a rollout",
                  "leave the rule defaults (64/64/2) or set max_object_keys / duplicate_object.enabled")
    if not rt.enabled and (rt.max_object_keys is not None or rt.duplicate_object.enabled):
        out.warn(f"{key}.enabled", "is false, so max_object_keys / duplicate_object have no effect",
                 "set repeat_terminate.enabled: true")


def vllm_server(config: Config, d: Derived, out: Findings) -> None:
    """Server mode: listed servers with real URLs and ports, a single learner process."""
    rm = config.rollout_matching
    if rm is None or rm.rollout_backend != "vllm" or rm.vllm.mode != "server":
        return
    key = f"{RM}.vllm.server.servers"
    if not rm.vllm.server.servers:
        out.error(key, "server mode needs at least one server", "add `- {base_url: http://127.0.0.1:8000, group_port: 51216}`")
    for i, server in enumerate(rm.vllm.server.servers):
        if not server.base_url.startswith(("http://", "https://")) or server.base_url.endswith("/"):
            out.error(f"{key}[{i}].base_url", f"{server.base_url!r} is not an http(s) URL without a trailing slash",
                      "write e.g. http://127.0.0.1:8000")
        if server.group_port <= 0:
            out.error(f"{key}[{i}].group_port", f"must be > 0, got {server.group_port}", "use e.g. 51216")
    if d.world_size != 1:
        out.error(f"{RM}.vllm.mode", f"server mode needs a single learner process, but world size is "
                  f"{d.world_size} (from {d.world_size_source})",
                  "launch one learner (no torchrun), or use vllm.mode: colocate")


def vllm_colocate(config: Config, d: Derived, out: Findings) -> None:
    """Colocate tensor parallelism must tile the learner ranks."""
    rm = config.rollout_matching
    if rm is None or rm.rollout_backend != "vllm" or rm.vllm.mode != "colocate":
        return
    tp = rm.vllm.tensor_parallel_size
    if tp > 0 and d.world_size % tp:
        out.error(f"{RM}.vllm.tensor_parallel_size", f"{tp} does not divide the world size {d.world_size}",
                  "use a divisor of the number of learner processes")


def vllm_sync(config: Config, _d: Derived, out: Findings) -> None:
    rm = config.rollout_matching
    if rm is not None and rm.vllm.sync.mode == "adapter" and not rm.vllm.enable_lora:
        out.error(f"{RM}.vllm.sync.mode", "`adapter` sync needs vllm.enable_lora: true",
                  "set vllm.enable_lora: true, or sync.mode: full")


def pipeline(config: Config, _d: Derived, out: Findings) -> None:
    """Overlapping rollouts with learning needs rollouts on other GPUs (vLLM server mode)."""
    ab, rm = config.stage2_ab, config.rollout_matching
    if ab is None or not ab.channel_b.enable_pipeline or rm is None:
        return
    if rm.rollout_backend != "vllm" or rm.vllm.mode != "server":
        out.error(f"{AB}.channel_b.enable_pipeline",
                  f"needs rollout_backend: vllm and vllm.mode: server (got {rm.rollout_backend}"
                  f"{'/' + rm.vllm.mode if rm.rollout_backend == 'vllm' else ''})",
                  "switch to vLLM server mode or set enable_pipeline: false")


def offload(config: Config, _d: Derived, out: Findings) -> None:
    """Offload cannot move DeepSpeed-managed state; elsewhere than colocate vLLM it does nothing."""
    rm = config.rollout_matching
    if rm is None or not rm.offload.enabled:
        return
    if config.training.deepspeed is not None:
        out.error(f"{RM}.offload.enabled", OFFLOAD_DEEPSPEED, "pick one of the mitigations above")
    colocate = rm.rollout_backend == "vllm" and rm.vllm.mode == "colocate"
    if not colocate or not (rm.offload.offload_model or rm.offload.offload_optimizer):
        out.warn(f"{RM}.offload.enabled", "has no effect (it needs vLLM colocate and offload_model or offload_optimizer)",
                 "disable it or enable offload_model / offload_optimizer")


def length_budget(config: Config, d: Derived, out: Findings) -> None:
    """The teacher-forced target (and the vLLM context) must hold the prompt plus a full rollout."""
    rm = config.rollout_matching
    if rm is None:
        return
    need = rm.prompt_len_estimate + rm.max_new_tokens
    budget = f"prompt_len_estimate {rm.prompt_len_estimate} + max_new_tokens {rm.max_new_tokens} = {need}"
    if config.global_max_length < need:
        out.warn("global_max_length", f"{config.global_max_length} < {budget}; long rollouts will not fit a target",
                 f"raise global_max_length to >= {need} or lower max_new_tokens")
    if d.vllm_max_model_len is not None and d.vllm_max_model_len < need:
        out.warn(f"{RM}.vllm.max_model_len", f"{d.vllm_max_model_len} < {budget}",
                 f"raise vllm.max_model_len to >= {need}")


RULES = (decoding, repeat_terminate, vllm_server, vllm_colocate, vllm_sync, pipeline, offload, length_budget)
