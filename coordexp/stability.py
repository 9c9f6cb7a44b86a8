"""What a run does with the stability guard's alarms: warn, stop, or back b_ratio off (persisted, resumable).

The rules are ``coordexp.telemetry.guard`` (pure). This module feeds them one rollout step at a time,
with the step's guard inputs reduced over ranks first (every rank calls it on the same steps: a
Channel-B step that generated, whatever its own samples did), so all ranks raise the same alarms and
take the same action; a rank-local decision would split the schedule and hang DDP.

- ``warn``: the alarm goes to the log, to ``guard/alarm/<name>`` and to the progress bar.
- ``stop``: the executor finishes the step, saves a checkpoint and ``train`` raises ``StabilityStop``
  naming the alarm (the CLI exits non-zero with that message).
- ``backoff``: the schedule gets a piece of ``backoff_b_ratio`` from the next step on
  (``coordexp.core.schedule.backed_off``); an alarm when the ratio is already at or below it stops the
  run. The backoffs are saved in ``trainer_state.json`` and re-applied on resume, so a resumed run
  schedules exactly the channels of the uninterrupted one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING

import attrs

from coordexp.core.schedule import Channel, RatioSchedule, Schedule, backed_off
from coordexp.telemetry.guard import INPUTS, Alarm, GuardState, alarm_metrics, observe
from coordexp.telemetry.window import MetricWindow, finalize, reduce_across_ranks

if TYPE_CHECKING:
    from coordexp.config.schema_guard import StabilityGuardConfig
    from coordexp.stages import StepState

log = logging.getLogger("coordexp")
CONFIG_READS = (
    "custom.extra.stability_guard.enabled",
    "custom.extra.stability_guard.action",
    "custom.extra.stability_guard.backoff_b_ratio",
)


@attrs.frozen
class Backoff:
    start_step: int  # first optimizer step at the lowered ratio
    value: float
    alarms: tuple[str, ...] = attrs.field(converter=tuple)


def apply_backoffs(schedule: Schedule | None, backoffs: tuple[Backoff, ...]) -> Schedule | None:
    for b in backoffs:
        schedule = backed_off(schedule, start_step=b.start_step, value=b.value)
    return schedule


class StabilityControl:
    """The guard state, the backoffs so far, and the alarm that stopped the run (if one did)."""

    def __init__(self, cfg: StabilityGuardConfig, *, variant: str) -> None:
        self.cfg, self.variant = cfg, variant
        self.state = GuardState()
        self.backoffs: tuple[Backoff, ...] = ()
        self.stopped_by: Alarm | None = None
        self.alarms: tuple[Alarm, ...] = ()  # raised by the latest evaluation (the progress bar shows them)

    @property
    def active(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.alarms)

    def on_step(self, state: StepState, metrics: Mapping[str, float],
                schedule: Schedule | None) -> tuple[dict[str, float], Schedule | None]:
        """The guard metrics of a finished step and the schedule for the steps after it."""
        if not self.cfg.enabled or state.channel is not Channel.B or state.reuse or state.is_eval:
            return {}, schedule
        inputs = self._reduced(metrics)
        if not inputs.get("rollout/samples"):
            return {}, schedule
        # alarms carry the logged step (optimizer steps done), as logging.jsonl and the progress bar count
        self.state, alarms = observe(self.state, state.step + 1, inputs, self.cfg, variant=self.variant)
        self.alarms = alarms
        for a in alarms:
            log.warning("%s", a.message())
        out = alarm_metrics(alarms)
        if alarms and self.cfg.action == "stop":
            self._stop(alarms[0])
        elif alarms and self.cfg.action == "backoff":
            schedule = self._backoff(state.step, alarms, schedule, out)
        return out, schedule

    def _reduced(self, metrics: Mapping[str, float]) -> dict[str, float]:
        window = MetricWindow(variant=self.variant)
        window.add({k: metrics[k] for k in INPUTS if k in metrics}, 0)
        record = finalize(reduce_across_ranks(window.drain()))
        return {k: v for k, v in record.items() if k in INPUTS}

    def _stop(self, alarm: Alarm) -> None:
        if self.stopped_by is None:
            self.stopped_by = alarm
            log.error("stability guard: stopping after step %d on `%s` (custom.extra.stability_guard.action: "
                      "stop); the checkpoint saved now can start a fixed run (model.model: <run>/checkpoint-%d)",
                      alarm.step, alarm.name, alarm.step)

    def _backoff(self, step: int, alarms: tuple[Alarm, ...], schedule: Schedule | None,
                 out: dict[str, float]) -> Schedule | None:
        target = self.cfg.backoff_b_ratio
        if not isinstance(schedule, RatioSchedule):  # the config refuses this; a schedule built in code may not
            self._stop(alarms[0])
            return schedule
        current = schedule.piece_at(step + 1).value
        if current <= target:
            log.error("stability guard: b_ratio is already %g (<= backoff_b_ratio %g); stopping", current, target)
            self._stop(alarms[0])
            return schedule
        self.backoffs = (*self.backoffs, Backoff(step + 1, target, tuple(a.name for a in alarms)))
        out["guard/backoff"] = 1.0
        log.warning("stability guard: b_ratio %g -> %g from logged step %d on (custom.extra.stability_guard.action: "
                    "backoff; saved with the checkpoints)", current, target, step + 2)
        return backed_off(schedule, start_step=step + 1, value=target)

    # -- trainer_state.json ------------------------------------------------------------------------
    def to_json(self) -> dict:
        return {"guard": self.state.to_json(), "backoffs": [attrs.asdict(b) for b in self.backoffs]}

    def restore(self, data: Mapping | None, schedule: Schedule | None) -> Schedule | None:
        """Load the saved guard state and backoffs; the base schedule with the backoffs re-applied."""
        if not data:
            return schedule
        self.state = GuardState.from_json(data.get("guard"))
        self.backoffs = tuple(Backoff(**b) for b in data.get("backoffs", ()))
        return apply_backoffs(schedule, self.backoffs)
