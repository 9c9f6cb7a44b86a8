"""``custom.extra.rollout_matching.vllm.*``: the vLLM rollout backends (colocate and server).

Reference rollout §10.3 / §13.2 and AB §5.3. Where the legacy trainer used a ``None`` that meant
"some default decided at runtime" (``mode``, ``max_num_seqs``) coordexp writes the real default here, so a
dry-run shows what will happen; the remaining ``None`` values mean "not passed to vLLM" or are derived
from another key, as each help text says.
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob, section


@attrs.frozen
class VllmServerEntry:
    base_url: str = knob(help="Rollout server URL with scheme and port, e.g. `http://127.0.0.1:8000` (no trailing slash).")
    group_port: int = knob(help="Legacy NCCL weight-sync port (> 0); accepted for legacy configs, unused: vLLM 0.32 syncs over HTTP and a shared folder.")


@attrs.frozen
class VllmDebugDumpConfig:
    enabled: bool = knob(False, help="Write raw `{gt_text, rollout_text}` dumps of server rollouts.")
    every_steps: int | None = knob(None, help="Dump every N optimizer steps; null = `training.logging_steps`.")
    dump_first_step: bool | None = knob(None, help="Dump at step 0; null = `training.logging_first_step`.")
    only_world_process_zero: bool = knob(True, help="Only the main process dumps (else one `rank_<r>` folder per rank).")
    max_events: int = knob(3, help="Stop after this many dump files (0 = unlimited).")
    max_samples: int = knob(1, help="Samples written per dump.")
    max_chars: int = knob(4000, help="Clip each text to this many characters (<= 0: no clipping).")
    out_dir: str | None = knob(None, help="Dump folder; null = `vllm_server_debug/` in the run folder.")


@attrs.frozen
class VllmServerConfig:
    servers: tuple[VllmServerEntry, ...] = knob((), help="Rollout servers (stock vLLM OpenAI api_server); non-empty in server mode.")
    timeout_s: float = knob(240.0, help="Seconds to wait for server health and the start-time checks (> 0).")
    infer_timeout_s: float | None = knob(
        None, help="HTTP read timeout of one generate call in seconds; null or <= 0 = no timeout (a stalled server then waits forever: set it)."
    )
    debug_dump: VllmDebugDumpConfig = section(VllmDebugDumpConfig, help="Raw rollout dumps from server mode.")


@attrs.frozen
class VllmSyncConfig:
    mode: Literal["full", "adapter", "auto"] = knob(
        "full",
        help="Weight sync to the server: `full` merged weights, `adapter` LoRA tensors only (needs "
        "`vllm.enable_lora`), `auto` = adapter iff enable_lora.",
    )
    fallback_to_full: bool = knob(True, help="If an adapter sync fails, switch to full sync for the rest of the run.")


@attrs.frozen
class VllmConfig:
    mode: Literal["colocate", "server"] = knob(
        "colocate", help="`colocate`: a vLLM engine inside the learner process; `server`: external rollout server(s)."
    )
    tensor_parallel_size: int = knob(1, help="Colocate tensor-parallel size; must divide the learner world size.")
    max_model_len: int | None = knob(
        None, help="vLLM context length (prompt + max_new_tokens); null = `global_max_length`."
    )
    gpu_memory_utilization: float = knob(0.45, help="Fraction of GPU memory vLLM may reserve (0, 1].")
    enable_lora: bool = knob(False, help="Push LoRA adapters to vLLM instead of merged full weights.")
    load_format: str | None = knob(None, help="vLLM load format; null = `auto` (colocate starts from the learner's weights; `dummy` is refused).")
    enable_prefix_caching: bool = knob(True, help="vLLM automatic prefix caching.")
    sleep_level: int = knob(0, help="Colocate engine sleep level between rollouts (0 = never sleep, 1, 2).")
    enforce_eager: bool = knob(False, help="Disable CUDA graphs in vLLM.")
    disable_custom_all_reduce: bool = knob(True, help="Use NCCL all-reduce instead of vLLM's custom kernel.")
    max_num_seqs: int = knob(256, help="Maximum concurrent sequences in the engine (> 0).")
    max_num_batched_tokens: int | None = knob(None, help="Token budget per engine step (> 0); null = vLLM default.")
    distributed_executor_backend: str | None = knob(
        None, help="vLLM executor; null = `mp` for a single process, `external_launcher` otherwise."
    )
    infer_batch_size: int | None = knob(None, help="Split one colocate infer call into batches of this size; null/<= 0 = off.")
    enable_chunked_prefill: bool | None = knob(None, help="vLLM chunked prefill; null = vLLM default.")
    disable_chunked_mm_input: bool | None = knob(None, help="Keep multimodal inputs in one prefill chunk; null = default.")
    skip_mm_profiling: bool | None = knob(None, help="Skip vLLM's multimodal memory profiling; null = default.")
    kv_cache_dtype: str | None = knob(None, help="KV-cache dtype (e.g. `fp8`); null = model dtype.")
    cpu_offload_gb: float | None = knob(None, help="GiB of weights vLLM offloads to CPU (>= 0).")
    swap_space: float | None = knob(None, help="GiB of CPU swap space for vLLM (>= 0).")
    limit_mm_per_prompt: dict[str, int] | None = knob(
        None, help="Maximum multimodal items per prompt, e.g. `{image: 1, video: 0}`."
    )
    mm_encoder_tp_mode: Literal["weights", "data"] | None = knob(
        None, help="How the vision encoder uses tensor parallelism; null = vLLM default."
    )
    server: VllmServerConfig = section(VllmServerConfig, help="Server mode: servers, timeouts, debug dumps.")
    sync: VllmSyncConfig = section(VllmSyncConfig, help="How learner weights reach the rollout engine.")
