"""Rules about decoding, stop rules, the vLLM backends, the rollout buffer, offload and length budgets."""

from __future__ import annotations

from urllib.parse import urlsplit

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived, rollouts_share_learner_device
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


PORTS = range(1, 65536)


def _url_problem(url: str) -> str | None:
    """What is wrong with a server URL (scheme, host, port, trailing slash), None when it is usable."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or url.endswith("/"):
        return f"{url!r} is not an http(s) URL with a host and without a trailing slash"
    try:
        port = parts.port
    except ValueError:  # urllib refuses a port that is not a number in 0..65535
        port = -1
    if port is not None and port not in PORTS:
        return f"{url!r} has port {parts.netloc.rpartition(':')[2]!r}, outside 1..65535"
    return None


def vllm_servers(config: Config, _d: Derived, out: Findings) -> None:
    """Every listed server has a usable URL and a TCP port in 1..65535, whatever the mode."""
    rm = config.rollout_matching
    if rm is None:
        return
    key = f"{RM}.vllm.server.servers"
    for i, server in enumerate(rm.vllm.server.servers):
        problem = _url_problem(server.base_url)
        if problem is not None:
            out.error(f"{key}[{i}].base_url", problem, "write e.g. http://127.0.0.1:8000")
        if server.group_port not in PORTS:
            out.error(f"{key}[{i}].group_port", f"must be a TCP port in 1..65535, got {server.group_port}",
                      "use e.g. 51216")


def vllm_server(config: Config, d: Derived, out: Findings) -> None:
    """Server mode: at least one server, a single learner process."""
    rm = config.rollout_matching
    if rm is None or rm.rollout_backend != "vllm" or rm.vllm.mode != "server":
        return
    if not rm.vllm.server.servers:
        out.error(f"{RM}.vllm.server.servers", "server mode needs at least one server",
                  "add `- {base_url: http://127.0.0.1:8000, group_port: 51216}`")
    if d.world_size != 1:
        out.error(f"{RM}.vllm.mode", f"server mode needs a single learner process, but world size is "
                  f"{d.world_size} (from {d.world_size_source})",
                  "launch one learner (no torchrun), or use vllm.mode: colocate")


def vllm_multimodal_limits(config: Config, _d: Derived, out: Findings) -> None:
    """``limit_mm_per_prompt`` counts items per modality: named modalities, counts >= 0."""
    rm = config.rollout_matching
    limits = rm.vllm.limit_mm_per_prompt if rm is not None else None
    for modality, count in (limits or {}).items():
        key = f"{RM}.vllm.limit_mm_per_prompt.{modality}"
        if not modality.strip():
            out.error(f"{RM}.vllm.limit_mm_per_prompt", "has an empty modality name", "use e.g. {image: 1, video: 0}")
        elif count < 0:
            out.error(key, f"must be >= 0 (items per prompt), got {count}", "use e.g. 1 for image, 0 for video")


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


def pipeline(config: Config, d: Derived, out: Findings) -> None:
    """The Channel-B pipeline works with every backend; it only pays off when rollouts run elsewhere."""
    ab, rm = config.stage2_ab, config.rollout_matching
    if ab is None or not ab.channel_b.enable_pipeline or rm is None:
        return
    if config.custom.trainer_variant != "stage2_ab_training":
        out.warn(f"{AB}.channel_b.enable_pipeline", "has no effect under rollout_matching_sft",
                 "remove it, or use trainer_variant: stage2_ab_training")
        return
    if rollouts_share_learner_device(config):
        backend = rm.rollout_backend + (f" {rm.vllm.mode}" if rm.rollout_backend == "vllm" else "")
        out.warn(f"{AB}.channel_b.enable_pipeline",
                 f"rollouts ({backend}) run on the learner's device, so generation only overlaps the CPU-side "
                 "parse/match/target work of the previous chunk", "use the vLLM server backend for real overlap, or "
                 "set enable_pipeline: false")
    if rm.decode_batch_size >= d.rollouts_per_step // max(1, d.world_size):
        out.warn(f"{RM}.decode_batch_size", f"{rm.decode_batch_size} covers a rank's whole Channel-B step "
                 f"({d.rollouts_per_step} rollouts over {d.world_size} rank(s)): one chunk, nothing to overlap",
                 "lower decode_batch_size so a step has several chunks")


def rollout_buffer(config: Config, _d: Derived, out: Findings) -> None:
    """A buffer setting that cannot take effect is a warning, as is reuse with partial windows left in."""
    rm = config.rollout_matching
    if rm is None:
        return
    buf, key = rm.rollout_buffer, f"{RM}.rollout_buffer"
    if buf.enabled and buf.m_steps == 1:
        out.warn(f"{key}.m_steps", "is 1, so the enabled buffer never reuses a window", "set m_steps >= 2 or disable it")
    if not buf.enabled and buf.m_steps > 1:
        out.warn(f"{key}.enabled", f"is false, so m_steps {buf.m_steps} has no effect", "set rollout_buffer.enabled: true")
    if buf.enabled and buf.m_steps > 1 and not config.training.dataloader_drop_last:
        out.warn("training.dataloader_drop_last", "is false, so a final partial accumulation window is learned once, "
                 "without reuse", "set training.dataloader_drop_last: true for reuse on full windows only")


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


RULES = (decoding, repeat_terminate, vllm_servers, vllm_server, vllm_multimodal_limits, vllm_colocate, vllm_sync,
         pipeline, rollout_buffer, offload, length_budget)
