"""The short step plan printed by ``python -m coordexp.run --dry-run``: what one optimizer step will do.

The schedule preview asks the scheduler itself (``coordexp.core.schedule``, on the record ``coordexp.bind`` builds), so what the dry run shows is what
a run will do: a pattern cycle, or Bresenham on b_ratio (B iff floor((t+1) r) > floor(t r), t counted from
the start of the ramp piece in effect).
"""

from __future__ import annotations

from coordexp.bind.transitions import schedule_from_section
from coordexp.config.derive import Derived
from coordexp.config.schema_ab import ScheduleConfig
from coordexp.config.schema_root import Config
from coordexp.core.schedule import channel_for_step

PREVIEW_STEPS = 20


def channel_at(schedule: ScheduleConfig, step: int) -> str:
    """The channel ("A" or "B") that the scheduler in ``coordexp.core.schedule`` picks for ``step``."""
    return channel_for_step(step, schedule=schedule_from_section(schedule)).value


def _schedule_text(schedule: ScheduleConfig) -> str:
    scheduler = schedule_from_section(schedule)
    preview = "".join(channel_for_step(s, schedule=scheduler) for s in range(PREVIEW_STEPS))
    if schedule.pattern:
        rule = "pattern " + "".join(schedule.pattern)
    elif isinstance(schedule.b_ratio, float):
        rule = f"b_ratio {schedule.b_ratio:g}"
    else:
        rule = "b_ratio ramp " + " -> ".join(
            f"{p.value:g}" + (f" (< step {p.until_step})" if p.until_step is not None else "") for p in schedule.b_ratio
        )
    return f"{rule}; first {PREVIEW_STEPS} steps {preview}"


def _rollout_text(config: Config) -> str:
    rm = config.rollout_matching
    if rm is None:
        return "none"
    if rm.rollout_backend == "hf":
        return f"hf generate, decode_batch_size {rm.decode_batch_size}, decode_mode {rm.decode_mode}"
    v = rm.vllm
    where = ", ".join(s.base_url for s in v.server.servers) if v.mode == "server" else f"tp {v.tensor_parallel_size}"
    return f"vllm {v.mode} ({where}), decode_batch_size {rm.decode_batch_size}, weight sync {v.sync.mode}"


def step_plan(config: Config, derived: Derived) -> list[str]:
    """Human-readable lines; no I/O."""
    rm, ab, t = config.rollout_matching, config.stage2_ab, config.training
    lines = [f"trainer variant : {config.custom.trainer_variant}"]
    if config.custom.trainer_variant == "stage2_ab_training" and ab is not None:
        lines.append(f"channels        : A (GT teacher forcing, one forward; soft self-context not built yet) + "
                     f"B (rollout-matching, mode {ab.channel_b.mode}, rollouts then learning)")
        lines.append(f"schedule        : {_schedule_text(ab.schedule)}")
    else:
        lines.append("channels        : rollout-matching on every step")
    lines.append(f"rollout backend : {_rollout_text(config)}")
    if t.packing:
        lines.append(f"packing         : on, mode {derived.packing_mode}, packing_length {derived.packing_length}, "
                     f"buffer {t.packing_buffer}, min fill {t.packing_min_fill_ratio:g}")
    else:
        lines.append("packing         : off")
    budget = [f"global_max_length {config.global_max_length}"]
    if rm is not None:
        rt = rm.repeat_terminate
        budget.insert(0, f"max_new_tokens {rm.max_new_tokens}")
        cap = rt.max_object_keys if rt.enabled and rt.max_object_keys is not None else "none"
        lines.append(f"stop rules      : repeat_terminate {'on' if rt.enabled else 'off'}, object cap {cap}, "
                     f"prefix_policy {rm.prefix_policy}, iou_mode {rm.iou_mode}")
    lines.append("budgets         : " + ", ".join(budget))
    lines.append(f"batching        : world size {derived.world_size} ({derived.world_size_source}), per device "
                 f"{t.per_device_train_batch_size}, gradient accumulation {derived.gradient_accumulation_steps}, "
                 f"samples per step {derived.samples_per_step}, rollouts per step {derived.rollouts_per_step}")
    return lines
