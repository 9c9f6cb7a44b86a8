"""The short step plan printed by ``python -m coordexp.run --dry-run``: what one optimizer step will do.

The schedule preview asks the scheduler itself (``coordexp.core.schedule``, on the record ``coordexp.bind`` builds), so what the dry run shows is what
a run will do: a pattern cycle, or Bresenham on b_ratio (B iff floor((t+1) r) > floor(t r), t counted from
the start of the ramp piece in effect).
"""

from __future__ import annotations

from coordexp.bind.transitions import schedule_from_section
from coordexp.config.derive import Derived
from coordexp.config.schema_ab import ScheduleConfig, Stage2ABConfig
from coordexp.config.schema_root import Config
from coordexp.core.schedule import Channel, Schedule, channel_for_step
from coordexp.telemetry.guard import thresholds

PREVIEW_STEPS = 20
RARE_HORIZON, RARE_SHOWN = 2000, 6  # steps searched / listed for the rarer channel


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
    return f"{rule}; first {PREVIEW_STEPS} steps {preview}; {_rare_steps(scheduler)}"


def _rare_steps(scheduler: Schedule) -> str:
    """Where the rarer channel falls, e.g. ``B at steps 19, 39, 59, ...`` for b_ratio 0.05 (the reference values)."""
    seen = [channel_for_step(s, schedule=scheduler) for s in range(RARE_HORIZON)]
    rare = Channel.B if seen.count(Channel.B) <= seen.count(Channel.A) else Channel.A
    at = [s for s, c in enumerate(seen) if c is rare][:RARE_SHOWN]
    if not at:
        return f"no {rare.value} step in the first {RARE_HORIZON}"
    return f"{rare.value} at steps {', '.join(map(str, at))}, ..."


def _rollout_text(config: Config) -> str:
    rm = config.rollout_matching
    if rm is None:
        return "none"
    if rm.rollout_backend == "hf":
        return f"hf generate, decode_batch_size {rm.decode_batch_size}, decode_mode {rm.decode_mode}"
    v = rm.vllm
    where = ", ".join(s.base_url for s in v.server.servers) if v.mode == "server" else f"tp {v.tensor_parallel_size}"
    return f"vllm {v.mode} ({where}), decode_batch_size {rm.decode_batch_size}, weight sync {v.sync.mode}"


def _channel_a_text(ab: Stage2ABConfig) -> str:
    if ab.n_softctx_iter == 1:
        return "one forward"
    return (f"{ab.n_softctx_iter} forwards, soft self-context {ab.coord_ctx_embed_mode}, grad {ab.softctx_grad_mode}, "
            f"temperature {ab.softctx_temperature:g}")


def _channel_b_flow(config: Config) -> str:
    if not config.stage2_ab.channel_b.enable_pipeline:
        return "rollouts then learning"
    chunk = config.rollout_matching.decode_batch_size if config.rollout_matching is not None else 1
    return f"pipelined: chunks of {chunk} rolled out while the previous is parsed/matched/targeted, then learning"


def _guard_text(config: Config) -> str:
    g = config.stability_guard
    if not g.enabled:
        return "off"
    action = f"backoff to b_ratio {g.backoff_b_ratio:g}, then stop" if g.action == "backoff" else g.action
    limits = ", ".join(f"{name} > {value:g}" for name, value in thresholds(g).items() if value is not None)
    return f"on, action {action}, window {g.window}, patience {g.patience}; alarms {limits or 'none'}"


def step_plan(config: Config, derived: Derived) -> list[str]:
    """Human-readable lines; no I/O."""
    rm, ab, t = config.rollout_matching, config.stage2_ab, config.training
    lines = [f"trainer variant : {config.custom.trainer_variant}"]
    if config.custom.trainer_variant == "stage2_ab_training" and ab is not None:
        lines.append(f"channels        : A (GT teacher forcing, {_channel_a_text(ab)}) + "
                     f"B (rollout-matching, mode {ab.channel_b.mode}, {_channel_b_flow(config)})")
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
    lines.append(f"stability guard : {_guard_text(config)}")
    lines.append("budgets         : " + ", ".join(budget))
    lines.append(f"batching        : world size {derived.world_size} ({derived.world_size_source}), per device "
                 f"{t.per_device_train_batch_size}, gradient accumulation {derived.gradient_accumulation_steps}, "
                 f"samples per step {derived.samples_per_step}, rollouts per step {derived.rollouts_per_step}")
    return lines
