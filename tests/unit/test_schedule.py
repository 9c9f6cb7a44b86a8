"""The A/B scheduler: the legacy Bresenham values, long-run fractions, patterns, ramps, resume, realised ratio."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.bind import schedule_from_section
from coordexp.config.plan import channel_at
from coordexp.config.schema_ab import RampPoint, ScheduleConfig
from coordexp.core.schedule import (
    Channel,
    PatternSchedule,
    RatioPiece,
    RatioSchedule,
    RealizedRatio,
    backed_off,
    channel_for_step,
)
from coordexp.errors import ConfigError

SETTINGS = dict(deadline=None, derandomize=True, database=None)


def ratio(r: float) -> RatioSchedule:
    return schedule_from_section(ScheduleConfig(b_ratio=r))


def ramp(*points: tuple[int | None, float]) -> RatioSchedule:
    return schedule_from_section(ScheduleConfig(b_ratio=tuple(RampPoint(value=v, until_step=u) for u, v in points)))


def channels(schedule, steps) -> str:
    return "".join(channel_for_step(s, schedule=schedule) for s in steps)


def b_steps(schedule, n: int) -> list[int]:
    return [s for s in range(n) if channel_for_step(s, schedule=schedule) is Channel.B]


# --- the reference catalogue (AB 9 S1..S5) -------------------------------------------------------------


def test_half_alternates_starting_with_a():
    assert channels(ratio(0.5), range(6)) == "ABABAB"


def test_cold_b_falls_on_the_last_step_of_each_twenty():
    assert b_steps(ratio(0.05), 40) == [19, 39]


@pytest.mark.parametrize("step", [0, 7, 10**6])
def test_extremes_are_all_a_or_all_b(step):
    assert channel_for_step(step, schedule=ratio(0.0)) is Channel.A
    assert channel_for_step(step, schedule=ratio(1.0)) is Channel.B


def test_hot_b_has_a_at_0_6_13():
    assert channels(ratio(0.85), range(14)) == "ABBBBBABBBBBBA"


@pytest.mark.parametrize(
    ("r", "expected"),
    [(0.25, [3, 7, 11, 15, 19]), (0.2, [4, 9, 14, 19]), (1 / 3, [2, 5, 8, 11, 14, 17]), (0.5, list(range(1, 20, 2)))],
)
def test_b_steps_of_simple_fractions(r, expected):
    assert b_steps(ratio(r), 20) == expected


# --- long-run fraction ---------------------------------------------------------------------------------


@settings(max_examples=300, **SETTINGS)
@given(r=st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True), n=st.integers(1, 3000))
def test_fraction_of_b_steps_tracks_b_ratio(r, n):
    count = len(b_steps(ratio(r), n))
    assert abs(count / n - r) <= 1 / n
    # B steps are exactly the steps where floor(s * r) moves up, so the count is never above floor(n * r).
    assert count <= math.floor(n * r)


@settings(max_examples=60, **SETTINGS)
@given(
    values=st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=4),
    lengths=st.lists(st.integers(1, 400), min_size=4, max_size=4),
)
def test_every_ramp_piece_realises_its_own_ratio(values, lengths):
    until, points = 0, []
    for value, length in zip(values, lengths, strict=False):
        until += length
        points.append((until, value))
    schedule = ramp(*points)
    start = 0
    for (end, value), piece in zip(points, schedule.pieces, strict=True):
        assert piece.start_step == start
        count = sum(channel_for_step(s, schedule=schedule) is Channel.B for s in range(start, end))
        assert abs(count - (end - start) * value) <= 1
        start = end


# --- patterns ------------------------------------------------------------------------------------------


def test_pattern_cycles_from_step_zero():
    schedule = schedule_from_section(ScheduleConfig(pattern=("A", "A", "B")))
    assert channels(schedule, range(7)) == "AABAABA"
    assert channel_for_step(3 * 10**6 + 2, schedule=schedule) is Channel.B


def test_single_channel_pattern_is_constant():
    schedule = PatternSchedule(("B",))
    assert channels(schedule, range(5)) == "BBBBB"


# --- ramps ---------------------------------------------------------------------------------------------


def test_ramp_of_st_sched_001_restarts_the_count_at_each_piece():
    assert channels(ramp((4, 0.5), (None, 0.25)), range(12)) == "ABABAAABAAAB"


def test_ramp_piece_starts_exactly_at_the_previous_until_step():
    schedule = ramp((3, 1.0), (None, 0.0))
    assert channels(schedule, range(6)) == "BBBAAA"


def test_restart_differs_from_counting_globally():
    # 0.2 from step 8: counted from the piece start, B falls at 8+4 and 8+9; a global count would give 9, 14, 19.
    schedule = ramp((4, 0.05), (8, 0.1), (None, 0.2))
    assert b_steps(schedule, 20) == [12, 17]


def test_last_piece_with_until_step_keeps_going_after_it():
    closed = ramp((4, 0.5), (8, 0.25))
    open_ended = ramp((4, 0.5), (None, 0.25))
    assert closed == open_ended
    assert b_steps(closed, 24) == [1, 3, 7, 11, 15, 19, 23]


def test_seed_ramp_stays_cold():
    schedule = ramp((40, 0.05), (80, 0.10), (None, 0.20))
    assert b_steps(schedule, 100) == [19, 39, 49, 59, 69, 79, 84, 89, 94, 99]
    assert schedule.piece_at(45).value == 0.10
    assert schedule.piece_at(80).value == 0.20


# --- determinism and resume (S6) -----------------------------------------------------------------------


def test_choice_depends_only_on_step_and_schedule():
    steps = list(range(300))
    forward = {s: channel_for_step(s, schedule=ratio(0.37)) for s in steps}
    random.Random(0).shuffle(steps)
    rebuilt = ratio(0.37)  # as after a restart: a new record built from the same config
    assert {s: channel_for_step(s, schedule=rebuilt) for s in steps} == forward


def test_resume_at_step_one_continues_the_alternation():
    assert channels(ratio(0.5), range(1)) + channels(ratio(0.5), range(1, 3)) == "ABA"


def test_plan_preview_uses_the_scheduler():
    section = ScheduleConfig(b_ratio=(RampPoint(value=0.05, until_step=4), RampPoint(value=0.2)))
    schedule = schedule_from_section(section)
    assert [channel_at(section, s) for s in range(30)] == [channel_for_step(s, schedule=schedule) for s in range(30)]


# --- malformed schedules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "section",
    [
        ScheduleConfig(),
        ScheduleConfig(pattern=("A",), b_ratio=0.5),
        ScheduleConfig(pattern=()),
        ScheduleConfig(b_ratio=1.5),
        ScheduleConfig(b_ratio=float("nan")),
        ScheduleConfig(b_ratio=(RampPoint(value=0.1), RampPoint(value=0.2))),
        ScheduleConfig(b_ratio=(RampPoint(value=0.1, until_step=8), RampPoint(value=0.2, until_step=4),
                                RampPoint(value=0.3))),
    ],
)
def test_malformed_sections_raise_config_error_naming_the_key(section):
    with pytest.raises(ConfigError) as info:
        schedule_from_section(section)
    assert "stage2_ab.schedule" in info.value.messages[0]


def test_negative_step_is_refused():
    with pytest.raises(ValueError, match="step"):
        channel_for_step(-1, schedule=ratio(0.5))


def test_ratio_schedule_must_start_at_step_zero():
    with pytest.raises(ValueError, match="step 0"):
        RatioSchedule((RatioPiece(2, 0.5),))


# --- realised ratio (S7) -------------------------------------------------------------------------------


def test_realised_ratio_counts_each_step_once():
    ratio_ = RealizedRatio().record(0, Channel.A).record(0, Channel.B).record(1, Channel.B)
    assert ratio_.realized == 0.5
    assert ratio_.recent == (Channel.A, Channel.B)


def test_realised_ratio_is_zero_before_any_step():
    assert RealizedRatio().realized == 0.0


def test_realised_ratio_window_keeps_the_last_200_steps():
    ratio_ = RealizedRatio()
    for step in range(200):
        ratio_ = ratio_.record(step, Channel.A)
    assert ratio_.realized == 0.0
    for step in range(200, 250):
        ratio_ = ratio_.record(step, Channel.B)
    assert len(ratio_.recent) == 200
    assert ratio_.realized == 50 / 200
    for step in range(250, 400):
        ratio_ = ratio_.record(step, Channel.B)
    assert ratio_.realized == 1.0


def test_realised_ratio_follows_the_schedule():
    schedule, ratio_ = ratio(0.25), RealizedRatio()
    for step in range(400):
        for _micro in range(3):  # every micro-step of the window asks; only the first counts
            ratio_ = ratio_.record(step, channel_for_step(step, schedule=schedule))
    assert ratio_.realized == 0.25


def test_realised_ratio_refuses_steps_going_backwards():
    with pytest.raises(ValueError, match="backwards"):
        RealizedRatio().record(5, Channel.A).record(4, Channel.B)


@pytest.mark.parametrize("stop", [0, 1, 19, 20, 250, 433])
def test_realised_ratio_rebuilt_for_a_resume_equals_the_uninterrupted_one(stop):
    schedule = ramp((100, 0.05), (300, 0.5), (None, 0.2))
    straight = RealizedRatio()
    for step in range(stop):
        straight = straight.record(step, channel_for_step(step, schedule=schedule))
    rebuilt = RealizedRatio.before(stop, schedule=schedule)
    assert rebuilt == straight
    nxt = channel_for_step(stop, schedule=schedule)
    assert rebuilt.record(stop, nxt).realized == straight.record(stop, nxt).realized


# --- guard backoff pieces ---------------------------------------------------------------------------------

def test_backoff_keeps_the_past_and_holds_the_new_ratio_for_the_rest_of_the_run():
    hot = ratio(0.85)
    cooled = backed_off(hot, start_step=40, value=0.05)
    assert cooled.pieces == (RatioPiece(0, 0.85), RatioPiece(40, 0.05))
    assert channels(cooled, range(40)) == channels(hot, range(40))
    assert b_steps(cooled, 100)[-3:] == [59, 79, 99]  # the piece counts from its own first step


def test_backoff_drops_later_ramp_pieces_and_replaces_one_starting_at_the_same_step():
    schedule = ramp((100, 0.05), (200, 0.10), (None, 0.20))
    assert backed_off(schedule, start_step=150, value=0.02).pieces == (
        RatioPiece(0, 0.05), RatioPiece(100, 0.10), RatioPiece(150, 0.02))
    assert backed_off(schedule, start_step=100, value=0.02).pieces == (RatioPiece(0, 0.05), RatioPiece(100, 0.02))
    assert backed_off(schedule, start_step=0, value=0.0).pieces == (RatioPiece(0, 0.0),)
