"""Single-key range checks, as one table: the key, the allowed interval, and whether null is allowed.

Cross-field rules live in the other ``rules_*`` modules; this table only says "this number must lie here".
A key whose section is absent (e.g. no ``stage2_ab``) is skipped.
"""

from __future__ import annotations

from typing import Any

import attrs

from coordexp.config._findings import Findings
from coordexp.config.derive import Derived
from coordexp.config.schema_root import Config

RM = "custom.extra.rollout_matching"
AB = "custom.extra.stage2_ab"
GUARD = "custom.extra.stability_guard"
INF = float("inf")


@attrs.frozen
class Range:
    key: str
    low: float = -INF
    high: float = INF
    low_open: bool = False  # True: value must be > low (else >= low)
    high_open: bool = False

    def holds(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def text(self) -> str:
        """Bounds are printed as written in the table (``[1.0, 4.0]`` for float knobs, ``> 0`` for counts)."""
        low, high = _num(self.low), _num(self.high)
        if self.high == INF:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.low == -INF:
            return f"{'<' if self.high_open else '<='} {high}"
        return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"


def _num(value: float) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def positive(key: str) -> Range:
    return Range(key, 0, low_open=True)


def non_negative(key: str) -> Range:
    return Range(key, 0)


def unit(key: str, *, low_open: bool = False, high_open: bool = False) -> Range:
    return Range(key, 0, 1, low_open, high_open)


RANGES: tuple[Range, ...] = (
    positive("global_max_length"),
    positive("training.per_device_train_batch_size"),
    positive("training.per_device_eval_batch_size"),
    positive("training.effective_batch_size"),
    positive("training.gradient_accumulation_steps"),
    positive("training.world_size"),
    positive("training.learning_rate"),
    positive("training.vit_lr"),
    positive("training.aligner_lr"),
    non_negative("training.min_learning_rate"),
    unit("training.warmup_ratio", high_open=True),
    non_negative("training.warmup_steps"),
    non_negative("training.weight_decay"),
    positive("training.max_grad_norm"),
    positive("training.max_steps"),
    positive("training.num_train_epochs"),
    positive("training.logging_steps"),
    positive("training.eval_steps"),
    positive("training.save_steps"),
    positive("training.save_total_limit"),
    non_negative("training.save_delay_steps"),
    non_negative("training.dataloader_num_workers"),
    Range("training.seed", 0, 2**32 - 1),  # numpy / random / vLLM seeds are 32-bit unsigned
    positive("tuner.lora_rank"),
    positive("tuner.lora_alpha"),
    unit("tuner.lora_dropout", high_open=True),
    positive("model.max_pixels"),
    positive("custom.train_sample_limit"),
    positive("custom.val_sample_limit"),
    non_negative("custom.coord_soft_ce_w1.soft_ce_weight"),
    non_negative("custom.coord_soft_ce_w1.w1_weight"),
    non_negative("custom.coord_soft_ce_w1.gate_weight"),
    positive("custom.coord_soft_ce_w1.temperature"),
    positive("custom.coord_soft_ce_w1.target_sigma"),
    non_negative("custom.coord_soft_ce_w1.target_truncate"),
    positive(f"{RM}.decode_batch_size"),
    positive(f"{RM}.max_new_tokens"),
    Range(f"{RM}.num_beams", 1),
    Range(f"{RM}.num_return_sequences", 1),
    positive(f"{RM}.repetition_penalty"),
    non_negative(f"{RM}.prompt_len_estimate"),
    non_negative(f"{RM}.decoding.temperature"),
    unit(f"{RM}.decoding.top_p", low_open=True),
    non_negative(f"{RM}.repeat_terminate.min_new_tokens"),
    non_negative(f"{RM}.repeat_terminate.max_consecutive_token_repeats"),
    non_negative(f"{RM}.repeat_terminate.ngram_size"),
    non_negative(f"{RM}.repeat_terminate.ngram_repeats"),
    Range(f"{RM}.repeat_terminate.max_object_keys", 1),
    unit(f"{RM}.repeat_terminate.duplicate_object.iou_threshold", low_open=True),
    Range(f"{RM}.candidate_top_k", 1),
    unit(f"{RM}.maskiou_gate"),
    positive(f"{RM}.maskiou_resolution"),
    non_negative(f"{RM}.fp_cost"),
    non_negative(f"{RM}.fn_cost"),
    positive(f"{RM}.ot_epsilon"),
    Range(f"{RM}.ot_iters", 1),
    positive(f"{RM}.target_sigma"),
    non_negative(f"{RM}.target_truncate"),
    positive(f"{RM}.temperature_coord"),
    non_negative(f"{RM}.soft_ce_weight"),
    non_negative(f"{RM}.w1_weight"),
    non_negative(f"{RM}.gate_weight"),
    non_negative(f"{RM}.debug_dump_max"),
    positive(f"{RM}.monitor_dump.every_steps"),
    non_negative(f"{RM}.monitor_dump.max_events"),
    positive(f"{RM}.monitor_dump.max_samples"),
    positive(f"{RM}.monitor_dump.max_text_chars"),
    Range(f"{RM}.rollout_buffer.m_steps", 1),
    non_negative(f"{RM}.desc_monitor.every_steps"),
    non_negative(f"{RM}.desc_monitor.max_pairs"),
    unit(f"{RM}.desc_monitor.semantic_threshold"),
    positive(f"{RM}.desc_monitor.semantic_batch_size"),
    positive(f"{RM}.desc_monitor.semantic_max_length"),
    positive(f"{RM}.vllm.tensor_parallel_size"),
    positive(f"{RM}.vllm.max_model_len"),
    unit(f"{RM}.vllm.gpu_memory_utilization", low_open=True),
    Range(f"{RM}.vllm.sleep_level", 0, 2),
    positive(f"{RM}.vllm.max_num_seqs"),
    positive(f"{RM}.vllm.max_num_batched_tokens"),
    non_negative(f"{RM}.vllm.cpu_offload_gb"),
    non_negative(f"{RM}.vllm.swap_space"),
    positive(f"{RM}.vllm.server.timeout_s"),
    positive(f"{RM}.vllm.server.debug_dump.every_steps"),
    non_negative(f"{RM}.vllm.server.debug_dump.max_events"),
    positive(f"{RM}.vllm.server.debug_dump.max_samples"),
    Range(f"{AB}.n_softctx_iter", 1),
    positive(f"{AB}.softctx_temperature"),
    non_negative(f"{AB}.desc_ce_weight"),
    non_negative(f"{AB}.bbox_smoothl1_weight"),
    non_negative(f"{AB}.bbox_ciou_weight"),
    non_negative(f"{AB}.coord_ce_weight"),
    non_negative(f"{AB}.coord_el1_weight"),
    non_negative(f"{AB}.coord_ehuber_weight"),
    Range(f"{AB}.coord_huber_delta", 1e-6),
    positive(f"{AB}.channel_b.rollouts_per_step"),
    Range(f"{AB}.channel_b.drop_invalid_struct_ce_multiplier", 1.0, 4.0),
    Range(f"{GUARD}.window", 1),
    Range(f"{GUARD}.patience", 1),
    unit(f"{GUARD}.backoff_b_ratio", high_open=True),
    non_negative(f"{GUARD}.max_gen_p90_frac"),
    non_negative(f"{GUARD}.max_truncated_rate"),
    non_negative(f"{GUARD}.max_drop_frac"),
    non_negative(f"{GUARD}.max_pred_gt_ratio"),
    non_negative(f"{GUARD}.max_desc_duplicates"),
    non_negative(f"{GUARD}.max_invalid_coord_slots"),
)

ABSENT = object()


def value_at(config: Config, key: str) -> Any:
    """The value at a dotted key, or ``ABSENT`` when a section on the way is null."""
    node: Any = config
    for part in key.split("."):
        if node is None:
            return ABSENT
        node = getattr(node, part)
    return node


def check_ranges(config: Config, _derived: Derived, out: Findings) -> None:
    for rng in RANGES:
        value = value_at(config, rng.key)
        if value is ABSENT or value is None or rng.holds(value):
            continue
        out.error(rng.key, f"must be {rng.text()}, got {value!r}", f"set a value {rng.text()}")


RULES = (check_ranges,)
