"""Runner for ``Transition: guard``: the stability guard over a stream of Channel-B step metrics, and its action.

Input: one case or ``{"cases": [...]}``; a case is ``{"guard": {stability_guard keys}, "schedule"?:
{stage2_ab.schedule}, "steps": [{base rollout metrics of one step}, ...]}``. Each step is a Channel-B
step that generated (``rollout/generated_sequences`` is filled in from ``rollout/samples``), fed in order
to the executor's ``StabilityControl``. Output per step: the alarms raised (name, value, threshold,
streak) and the guard metrics, plus, with a schedule, the b_ratio in effect at the next step; then the
alarm that stopped the run (if any) and the backoffs as ``trainer_state.json`` stores them. ``enabled``
defaults to true here.
"""

from __future__ import annotations

from typing import Any

from coordexp.config.schema_ab import ScheduleConfig
from coordexp.config.schema_guard import StabilityGuardConfig
from coordexp.core.schedule import Channel, RatioSchedule
from coordexp.errors import SpecError
from coordexp.spec.runners import each_case

TRANSITION = "guard"


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    from coordexp.bind import schedule_from_section
    from coordexp.stability import StabilityControl
    from coordexp.stages import StepState

    if not isinstance(case, dict) or "steps" not in case:
        raise SpecError(f"guard fixture case needs 'steps', got {case!r}")
    control = StabilityControl(StabilityGuardConfig(**{"enabled": True, **case.get("guard", {})}),
                               variant="stage2_ab_training")
    schedule = schedule_from_section(ScheduleConfig(**case["schedule"])) if "schedule" in case else None
    out = []
    for step, metrics in enumerate(case["steps"]):
        metrics = {"rollout/generated_sequences": metrics.get("rollout/samples", 0.0), **metrics}
        logged, schedule = control.on_step(StepState(step=step, channel=Channel.B), metrics, schedule)
        row: dict[str, Any] = {
            "alarms": [{"name": a.name, "value": round(a.value, 6), "threshold": a.threshold, "streak": a.streak}
                       for a in control.alarms],
            "metrics": logged,
        }
        if isinstance(schedule, RatioSchedule):
            row["b_ratio_next"] = schedule.piece_at(step + 1).value
        out.append(row)
    stopped = control.stopped_by
    return {"steps": out, "stopped_by": None if stopped is None else {"name": stopped.name, "step": stopped.step},
            "saved_backoffs": control.to_json()["backoffs"]}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
