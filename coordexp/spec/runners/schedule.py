"""Runner for ``Transition: schedule``: the A/B channel of optimizer steps, and the realised B ratio.

Input, one case or ``{"cases": [case, ...]}``. A schedule case names its source and the steps to show:

- source, exactly one of ``"schedule": {...}`` (a ``stage2_ab.schedule`` section as written in YAML, e.g.
  ``{"b_ratio": 0.5}`` or ``{"b_ratio": [{"until_step": 4, "value": 0.5}, {"value": 0.25}]}``), or
  ``"config": {...}`` (a whole config mapping, loaded and validated like a real run; the schedule is then
  built from its ``stage2_ab`` section, so a config the loader refuses never reaches the scheduler);
- steps, exactly one of ``"first": N`` (steps 0..N-1, shown as one string plus the list of B steps) or
  ``"steps": [s, ...]`` (shown as step -> channel);
- ``"resume_at": k`` (with ``first``): the run is cut before step k and a new schedule is built from the
  same input for steps k..N-1; the output shows both halves next to the uninterrupted run.

A realised-ratio case is ``{"record": [[step, "A"|"B"], ...], "window": n?}``: the records go into
``RealizedRatio`` in order; the output shows, per record, whether it counted and the ratio after it.
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs
import cattrs

from coordexp.bind import bind_schedule, schedule_from_section
from coordexp.config import load_config_data, validate
from coordexp.config.convert import config_converter
from coordexp.config.schema_ab import ScheduleConfig
from coordexp.core.schedule import (
    REALIZED_WINDOW,
    Channel,
    RatioSchedule,
    RealizedRatio,
    Schedule,
    channel_for_step,
)
from coordexp.errors import ConfigError, ConfigWarning, SpecError
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import each_case

TRANSITION = "schedule"


@attrs.frozen
class ScheduleCase:
    schedule: dict[str, Any] | None = None  # a stage2_ab.schedule section, as in YAML
    config: dict[str, Any] | None = None  # a whole config mapping
    first: int | None = None  # show steps 0..first-1
    steps: tuple[int, ...] | None = None  # show these optimizer steps
    resume_at: int | None = None  # cut the run before this step and rebuild the schedule


@attrs.frozen
class RecordCase:
    record: tuple[tuple[int, Channel], ...]  # (optimizer step, channel) in recording order
    window: int = REALIZED_WINDOW  # optimizer steps


def _build(case: ScheduleCase) -> Schedule:
    """A fresh schedule record from the case's source, through the same path as a real run."""
    if case.schedule is not None:
        try:
            section = config_converter.structure(case.schedule, ScheduleConfig)
        except cattrs.BaseValidationError as exc:
            raise SpecError(f"schedule fixture: not a stage2_ab.schedule section: {case.schedule!r}") from exc
        return schedule_from_section(section)
    loaded = load_config_data(case.config, source="<fixture>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        validate(loaded.config, env={}, display=loaded.display)
    if loaded.config.stage2_ab is None:
        raise SpecError("schedule fixture: the config has no stage2_ab section")
    return bind_schedule(loaded.config)


def _channels(schedule: Schedule, steps: range) -> str:
    return "".join(channel_for_step(s, schedule=schedule) for s in steps)


def _check(case: ScheduleCase) -> None:
    if (case.schedule is None) == (case.config is None):
        raise SpecError("schedule fixture: give exactly one of 'schedule' and 'config'")
    if (case.first is None) == (case.steps is None):
        raise SpecError("schedule fixture: give exactly one of 'first' and 'steps'")
    if case.resume_at is not None and (case.first is None or not 0 < case.resume_at < case.first):
        raise SpecError("schedule fixture: 'resume_at' needs 'first' and must lie strictly inside 0..first")


def _run_schedule(case: ScheduleCase) -> dict[str, Any]:
    _check(case)
    try:
        schedule = _build(case)
    except ConfigError as exc:
        return {"error": {"type": "ConfigError", "messages": exc.messages}}
    out: dict[str, Any] = {}
    if isinstance(schedule, RatioSchedule):
        out["pieces"] = unstructure(schedule.pieces)
    else:
        out["pattern"] = "".join(schedule.pattern)
    if case.steps is not None:
        out["channels"] = {str(s): channel_for_step(s, schedule=schedule).value for s in case.steps}
        return out
    everything = _channels(schedule, range(case.first))
    out["channels"] = everything
    out["b_steps"] = [s for s, c in enumerate(everything) if c == "B"]
    if case.resume_at is not None:
        before = _channels(schedule, range(case.resume_at))
        resumed = _build(case)  # a new process: nothing carried over but the config and the restored step
        after = {str(s): channel_for_step(s, schedule=resumed).value for s in range(case.resume_at, case.first)}
        out["resume"] = {
            "before_checkpoint": before,
            "after_resume": after,
            "same_as_uninterrupted": before + "".join(after.values()) == everything,
        }
    return out


def _run_record(case: RecordCase) -> dict[str, Any]:
    ratio = RealizedRatio(window=case.window)
    shown = []
    for step, channel in case.record:
        after = ratio.record(step, channel)
        shown.append({"step": step, "channel": channel.value, "counted": after != ratio,
                      "realized": round(after.realized, 6)})
        ratio = after
    return {"records": shown, "realized": round(ratio.realized, 6), "window": ratio.window}


def _run_one(data: Any) -> dict[str, Any]:
    try:
        if isinstance(data, dict) and "record" in data:
            return _run_record(structure(data, RecordCase))
        return _run_schedule(structure(data, ScheduleCase))
    except cattrs.BaseValidationError as exc:
        raise SpecError(f"schedule fixture input does not fit the runner: {exc!r}") from exc


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
