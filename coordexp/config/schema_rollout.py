"""``custom.extra.rollout_matching.*``: rollout, decoding, stop rules, parsing, matching, monitors.

Every key of reference rollout §13.2 and AB §7.4, plus the stability controls of the b_ratio=0.85
post-mortem (object-count cap that yields exactly K objects, near-duplicate object stop, prefix policy,
exact/raster IoU). One deliberate change from the legacy schema: ``repeat_terminate`` defaults are the
working runtime values (256 / 64 / 64 / 2), so ``repeat_terminate: {enabled: true}`` alone turns on real
checks instead of the legacy silent no-op (reference rollout §15 W6).
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob, section
from coordexp.config.schema_vllm import VllmConfig


@attrs.frozen
class DecodingConfig:
    temperature: float = knob(0.0, help="Sampling temperature (>= 0); 0 = greedy, > 0 enables sampling.")
    top_p: float = knob(1.0, help="Nucleus sampling mass in (0, 1]; only used when sampling.")
    top_k: int = knob(-1, help="Top-k sampling (-1 = off, else >= 1); only used when sampling.")


@attrs.frozen
class DuplicateObjectStopConfig:
    enabled: bool = knob(False, help="Stop a rollout when the object just closed nearly duplicates an earlier one.")
    iou_threshold: float = knob(0.9, help="Box IoU at or above which two objects count as duplicates, in (0, 1].")
    same_desc: bool = knob(True, help="Also require identical (normalized) desc strings for a duplicate.")


@attrs.frozen
class RepeatTerminateConfig:
    enabled: bool = knob(False, help="Force EOS for a rollout that trips one of the rules below (per sequence).")
    min_new_tokens: int = knob(256, help="No rule fires before this many generated tokens (>= 0).")
    max_consecutive_token_repeats: int = knob(64, help="Fire when the last R generated tokens are identical (0 = off).")
    ngram_size: int = knob(64, help="Fire when the last m-token block repeats `ngram_repeats` times (0 = off).")
    ngram_repeats: int = knob(2, help="Repetitions of the last `ngram_size` block that fire (>= 2 when ngram_size > 0).")
    max_object_keys: int | None = knob(
        None,
        help="Object-count cap K: stop once K complete objects are emitted, so exactly K survive (null = no cap). "
        "The seed runbook recommends 60 for bbox_max60 data.",
    )
    duplicate_object: DuplicateObjectStopConfig = section(
        DuplicateObjectStopConfig, help="Near-duplicate object stop (box IoU + same desc)."
    )


@attrs.frozen
class OffloadConfig:
    enabled: bool = knob(False, help="Offload learner state to CPU during colocate vLLM rollouts.")
    offload_model: bool = knob(False, help="Move model parameters to CPU while vLLM generates.")
    offload_optimizer: bool = knob(False, help="Move optimizer state to CPU while vLLM generates.")


@attrs.frozen
class RolloutBufferConfig:
    enabled: bool = knob(
        False,
        help="Reuse one gradient-accumulation window of finished targets for `m_steps` optimizer steps: the E-step "
        "rolls out, parses, matches, builds and packs the window; the M-steps learn the cached batches again in the "
        "same order (no rollout, no repacking). Evaluation never reuses; the buffer starts empty after a resume.",
    )
    m_steps: int = knob(
        1,
        help="Optimizer steps learned from one window (>= 1; 1 = no reuse). The loader yields each full window "
        "m_steps times so no data is skipped; a final partial window runs once (see `training.dataloader_drop_last`).",
    )


@attrs.frozen
class MonitorDumpConfig:
    enabled: bool = knob(False, help="Write qualitative rollout / target dumps (JSON + Markdown).")
    every_steps: int | None = knob(None, help="Dump every N optimizer steps; null = `training.logging_steps`.")
    dump_first_step: bool | None = knob(None, help="Dump at step 0; null = `training.logging_first_step`.")
    only_world_process_zero: bool = knob(True, help="Only the main process dumps.")
    max_events: int = knob(20, help="Stop after this many dumps (0 = unlimited).")
    max_samples: int = knob(1, help="Samples per dump.")
    max_text_chars: int = knob(4000, help="Clip texts to this many characters (> 0).")
    out_dir: str | None = knob(None, help="Dump folder; null = `<training.output_dir>/monitor_dumps`.")
    write_markdown: bool = knob(True, help="Also write a Markdown rendering next to each JSON dump.")


@attrs.frozen
class DescMonitorConfig:
    enabled: bool = knob(False, help="Measure desc agreement of matched pairs (metrics only; never a loss).")
    mode: Literal["semantic", "both", "exact"] = knob("semantic", help="Exact string match, sentence-embedding similarity, or both.")
    every_steps: int = knob(0, help="Run every N optimizer steps; 0 = `training.logging_steps`.")
    max_pairs: int = knob(64, help="Matched pairs checked per step (0 = all, at eval).")
    semantic_threshold: float = knob(0.6, help="Cosine similarity counted as a semantic match.")
    semantic_model: str = knob("sentence-transformers/all-MiniLM-L6-v2", help="Sentence encoder: a local folder, or a hub id already in the local cache (nothing is downloaded).")
    semantic_device: str = knob("cpu", help="Encoder device (`cpu`, `cuda:0`, `auto`).")
    semantic_batch_size: int = knob(64, help="Encoder batch size.")
    semantic_max_length: int = knob(64, help="Encoder max tokens per desc.")


@attrs.frozen
class RolloutMatchingConfig:
    # --- rollout backend and decoding ---
    rollout_backend: Literal["vllm", "hf"] = knob("vllm", help="Rollout engine: `vllm` (colocate or server) or `hf` generate.")
    decode_batch_size: int = knob(1, help="Rollouts in flight per engine (> 0): per generate call with hf / colocate; in server mode per data-parallel replica (a server of data-parallel size N, read from its /server_info at start, gets N times this many at once; no need to scale it by hand); also the eval batch size.")
    decode_mode: Literal["greedy", "beam"] = knob("greedy", help="`beam` is HF-only; vLLM backends need `greedy` (sample via `decoding.temperature`).")
    max_new_tokens: int = knob(512, help="Rollout generation budget in tokens (> 0).")
    num_beams: int = knob(1, help="Beams for HF beam decoding (>= 1).")
    num_return_sequences: int | None = knob(None, help="HF beam: sequences returned per sample; null = num_beams.")
    repetition_penalty: float = knob(1.0, help="Repetition penalty (> 0; 1.0 = off).")
    prompt_len_estimate: int = knob(
        1024,
        help="Estimated prompt tokens (system + user text + vision tokens, about ceil(H/32)*ceil(W/32) per image). "
        "Used only by the config check that `global_max_length` covers prompt + max_new_tokens.",
    )
    decoding: DecodingConfig = section(DecodingConfig, help="Sampling knobs shared by every backend.")
    repeat_terminate: RepeatTerminateConfig = section(RepeatTerminateConfig, help="Per-sequence stop rules.")
    # --- parsing and matching ---
    prefix_policy: Literal["keep", "cut_at_first_invalid", "cut_at_first_duplicate"] = knob(
        "keep",
        help="Which rollout prefix is kept for the target: `keep` every valid object (invalid ones are dropped), "
        "or cut the prefix before the first invalid / first near-duplicate object.",
    )
    iou_mode: Literal["exact", "raster"] = knob(
        "exact", help="Matching IoU: `exact` analytic geometry, or `raster` masks at `maskiou_resolution`."
    )
    candidate_top_k: int = knob(10, help="GT candidates kept per prediction before IoU (>= 1).")
    maskiou_gate: float = knob(0.3, help="Pairs with IoU below this are rejected (the GT stays FN), in [0, 1].")
    maskiou_resolution: int = knob(256, help="Raster size of the norm1000 canvas for `iou_mode: raster` (> 0).")
    fp_cost: float = knob(1.0, help="Hungarian cost of leaving a prediction unmatched (>= 0).")
    fn_cost: float = knob(1.0, help="Hungarian cost of leaving a GT unmatched (>= 0).")
    ot_cost: Literal["l1", "l2"] = knob("l2", help="Point cost of the polygon self-context OT.")
    ot_epsilon: float = knob(10.0, help="Sinkhorn entropic regularisation (> 0).")
    ot_iters: int = knob(30, help="Sinkhorn iterations (>= 1).")
    # --- coord-loss overrides (null = custom.coord_soft_ce_w1) ---
    target_sigma: float | None = knob(None, help="Gaussian target width in bins; null = `custom.coord_soft_ce_w1.target_sigma`.")
    target_truncate: int | None = knob(None, help="Target truncation radius in bins; null = `custom.coord_soft_ce_w1.target_truncate`.")
    temperature_coord: float | None = knob(None, help="Coord softmax temperature; null = `custom.coord_soft_ce_w1.temperature`.")
    soft_ce_weight: float | None = knob(None, help="Soft-CE weight; null = `custom.coord_soft_ce_w1.soft_ce_weight`.")
    w1_weight: float | None = knob(None, help="W1 weight; null = `custom.coord_soft_ce_w1.w1_weight`.")
    gate_weight: float | None = knob(None, help="Coord-vocab gate weight; null = `custom.coord_soft_ce_w1.gate_weight`.")
    # --- runtime sections ---
    rollout_buffer: RolloutBufferConfig = section(
        RolloutBufferConfig, help="E-step / M-step reuse of one window of rollout targets (reference rollout 9.1)."
    )
    offload: OffloadConfig = section(OffloadConfig, help="CPU offload during colocate rollouts.")
    monitor_dump: MonitorDumpConfig = section(MonitorDumpConfig, help="Qualitative dumps of rollouts and targets.")
    record_rollouts: bool = knob(
        False, help="Write every rollout (prompt ids, completion ids, finish reason, sample id, config hash) to "
        "`<run folder>/rollouts.jsonl`, the input of offline replay."
    )
    desc_monitor: DescMonitorConfig = section(DescMonitorConfig, help="Desc agreement metrics.")
    debug_dump_parse_failures: bool = knob(False, help="Log clipped raw/prefix text of samples with parse drops or truncation.")
    debug_dump_max: int = knob(3, help="Maximum parse-failure log lines per step.")
    vllm: VllmConfig = section(VllmConfig, help="vLLM backend settings (ignored by `rollout_backend: hf`).")
