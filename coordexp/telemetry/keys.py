"""THE metric key registry: ``REGISTRY`` holds every key coordexp logs (see ``keymodel`` for the model).

Usage: ``REGISTRY.get(name)`` (a ``TelemetryError`` names an unregistered or retired key),
``check_parity(logged, registry=REGISTRY, ...)`` in integration tests, and
``python -m coordexp.telemetry.docs`` to regenerate ``docs/metrics.md`` from it.

``RETIRED`` lists names the seeds or the legacy trainers used that coordexp deliberately does not log,
with what to read instead; emitting one is an error that says so.
"""

from __future__ import annotations

from coordexp.telemetry import keys_eval, keys_guard, keys_rollout, keys_step
from coordexp.telemetry.keymodel import (
    AB,
    BOTH,
    RM,
    VARIANTS,
    Across,
    Agg,
    Emitter,
    Key,
    Mode,
    Parity,
    Registry,
    build_registry,
    check_parity,
)

RETIRED: dict[str, str] = {
    "rollout/decode_greedy": "the canonical name is rollout/decode_non_beam_count (reference rollout 14.7 D15)",
    "rollout/decode_beam": "the canonical name is rollout/decode_beam_count (reference rollout 14.7 D15)",
    "rollout/match_rate": "it equals rollout/recall; read that",
    "rollout/parse_dropped_ambiguous": "always 0 in the legacy (rollout 15 W12): coordexp aligns coord slots by token, "
    "so no object is ambiguous; drops by reason are rollout/parse_dropped/<reason>",
    "eval_rollout/parse_dropped_ambiguous": "always 0 in the legacy (rollout 15 W12); "
    "see eval_rollout/parse_dropped/<reason>",
    "rollout/rollout_len_mean": "read rollout/gen_new_tokens_mean (the generated length)",
    "rollout/rollout_len_p90": "read rollout/gen_new_tokens_p90 (the generated length)",
    "rollout/encoded_len_mean": "segment lengths are packing's concern: packing/avg_segment_len_last",
    "rollout/encoded_len_p90": "segment lengths are packing's concern: packing/avg_segment_len_last",
    "rollout/backend_hf": "the backend is a run constant: it is in the resolved config.yaml and the run meta line",
    "rollout/backend_vllm": "the backend is a run constant: it is in the resolved config.yaml and the run meta line",
    "rollout/matched_maskiou_sum": "internal numerator; read rollout/matched_maskiou_mean",
    "time/mask_build_s": "masks are built in BuildTarget and timed by time/rollout_teacher_encode_s",
    "train/micro_steps": "read learn/packs (forward/backward passes)",
    "stage2/drop_poly": "read stage2_ab/channel_b/strict_drop/reason/poly_unsupported",
    "stage2/drop_unknown": "read stage2_ab/channel_b/strict_drop/reason/unknown_geom",
    "stage2/drop_bbox_invalid": "read stage2_ab/channel_b/strict_drop/reason/bbox_invalid",
    "stage2_ab/channel_b/closure_supervision/N_drop": "a sample whose target cannot be built is dropped and counted "
    "under rollout/dropped_samples/<reason>",
    "rollout/buffer_micro_idx": "the rollout buffer reuses whole optimizer-step windows, not micro-batches; "
    "read rollout/buffer_completed_steps",
    "eval_loss": "production-style evaluation has no teacher-forced loss (seed 002)",
}

REGISTRY: Registry = build_registry((*keys_step.KEYS, *keys_rollout.KEYS, *keys_guard.KEYS, *keys_eval.KEYS), RETIRED)

__all__ = [
    "AB",
    "BOTH",
    "REGISTRY",
    "RETIRED",
    "RM",
    "VARIANTS",
    "Across",
    "Agg",
    "Emitter",
    "Key",
    "Mode",
    "Parity",
    "Registry",
    "check_parity",
]
