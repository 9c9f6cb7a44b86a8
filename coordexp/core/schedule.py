"""The A/B schedule: which channel an optimizer step trains on, and the realised B share.

``channel_for_step(step, schedule=...)`` is a pure function of the optimizer step and the schedule record:
no RNG, no state. That is what makes a resumed run pick exactly the channel the uninterrupted run would
have picked (the restored ``global_step`` is all it needs), and what lets every rank agree without a
broadcast.

Two kinds of schedule:

- ``PatternSchedule``: a fixed cycle, step s uses ``pattern[s % len(pattern)]``.
- ``RatioSchedule``: one or more pieces, each a B share ``value`` that starts at ``start_step``. Within a
  piece the legacy Bresenham rule decides, counted from the piece's own first step: with t = s - start_step,
  B iff floor((t+1)·v) > floor(t·v) (v <= 0 is always A, v >= 1 always B). Restarting the count per piece
  is what makes each piece of a ramp realise its own ratio; a constant ``b_ratio`` is a single piece from
  step 0, which is exactly the legacy rule. The float expression is the legacy one on purpose, so golden
  values computed the legacy way (0.85 -> A at 0, 6, 13) hold bit for bit.

``RealizedRatio`` is the logged ``stage2_ab/b_ratio_realized``: the mean over the last 200 scheduled
steps (1 for B, 0 for A), each step counted once however many micro-steps ask. It is not persisted: a
resumed run rebuilds it from the schedule (``RealizedRatio.before``), so its logged values equal the
uninterrupted run's (the legacy trainer restarted it empty, and its logs jumped after every resume).

``backed_off(schedule, start_step, value)`` is how the stability guard lowers b_ratio: the pieces that
start after ``start_step`` are replaced by one piece of ``value`` from ``start_step`` on. It is a schedule
like any other, so the choice stays a pure function of (step, schedule); the executor persists the
backoff pieces in ``trainer_state.json`` and re-applies them on resume.
"""

from __future__ import annotations

import enum
import math

import attrs

REALIZED_WINDOW = 200  # optimizer steps averaged by stage2_ab/b_ratio_realized (legacy value)


class Channel(enum.StrEnum):
    """Channel-A (GT teacher forcing) or Channel-B (rollout-matching)."""

    A = "A"
    B = "B"


def _non_empty(_inst: object, attribute: attrs.Attribute, value: tuple) -> None:
    if not value:
        raise ValueError(f"{attribute.name} must not be empty")


@attrs.frozen
class PatternSchedule:
    pattern: tuple[Channel, ...] = attrs.field(
        converter=lambda items: tuple(Channel(i) for i in items), validator=_non_empty
    )


def _unit_interval(_inst: object, attribute: attrs.Attribute, value: float) -> None:
    # NaN fails this comparison too, which is what we want: floor(nan) would raise deep inside the rule.
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must be in [0, 1], got {value}")


@attrs.frozen
class RatioPiece:
    start_step: int = attrs.field(validator=attrs.validators.ge(0))  # first optimizer step of the piece
    value: float = attrs.field(converter=float, validator=_unit_interval)  # B share of the piece's steps


def _pieces_in_order(_inst: object, _attribute: attrs.Attribute, pieces: tuple[RatioPiece, ...]) -> None:
    if not pieces:
        raise ValueError("a ratio schedule needs at least one piece")
    if pieces[0].start_step != 0:
        raise ValueError(f"the first piece must start at step 0, got {pieces[0].start_step}")
    starts = [p.start_step for p in pieces]
    if any(b <= a for a, b in zip(starts, starts[1:], strict=False)):
        raise ValueError(f"piece start steps must be strictly increasing, got {starts}")


@attrs.frozen
class RatioSchedule:
    """Bresenham pieces; a piece lasts until the next one starts, the last one forever."""

    pieces: tuple[RatioPiece, ...] = attrs.field(converter=tuple, validator=_pieces_in_order)

    def piece_at(self, step: int) -> RatioPiece:
        """The piece in effect at ``step``: the last one that has started."""
        found = self.pieces[0]
        for piece in self.pieces[1:]:
            if piece.start_step > step:
                break
            found = piece
        return found


Schedule = PatternSchedule | RatioSchedule


def _bresenham(t: int, ratio: float) -> Channel:
    if ratio <= 0:
        return Channel.A
    if ratio >= 1:
        return Channel.B
    return Channel.B if math.floor((t + 1) * ratio) > math.floor(t * ratio) else Channel.A


def channel_for_step(step: int, *, schedule: Schedule) -> Channel:
    """The channel of optimizer step ``step`` (0-based ``global_step``)."""
    if step < 0:
        raise ValueError(f"optimizer step must be >= 0, got {step}")
    if isinstance(schedule, PatternSchedule):
        return schedule.pattern[step % len(schedule.pattern)]
    piece = schedule.piece_at(step)
    return _bresenham(step - piece.start_step, piece.value)


def backed_off(schedule: RatioSchedule, *, start_step: int, value: float) -> RatioSchedule:
    """``schedule`` until ``start_step``, then ``value`` for the rest of the run (later ramp pieces dropped).

    A backoff that starts where a piece starts replaces that piece; a ramp piece that would raise b_ratio
    again later is dropped on purpose: a guard backoff holds until a person changes the config.
    """
    kept = tuple(p for p in schedule.pieces if p.start_step < start_step)
    return RatioSchedule((*kept, RatioPiece(start_step, value)) if kept else (RatioPiece(0, value),))


@attrs.frozen
class RealizedRatio:
    """Sliding mean of the scheduled channels (B = 1, A = 0); ``record`` returns the next value."""

    window: int = attrs.field(default=REALIZED_WINDOW, validator=attrs.validators.ge(1))  # optimizer steps
    recent: tuple[Channel, ...] = ()  # oldest first, at most ``window`` entries
    last_step: int | None = None  # the last optimizer step recorded

    def record(self, step: int, channel: Channel) -> RealizedRatio:
        """Count ``step`` once: a repeat of the last recorded step (another micro-step) changes nothing.

        A step before the last recorded one means the caller's step counter went backwards, which the
        trainer never does within one process; it is refused rather than averaged in.
        """
        if self.last_step is not None and step < self.last_step:
            raise ValueError(f"step {step} recorded after step {self.last_step}; steps must not go backwards")
        if step == self.last_step:
            return self
        recent = (*self.recent, Channel(channel))[-self.window :]
        return attrs.evolve(self, recent=recent, last_step=step)

    @classmethod
    def before(cls, step: int, *, schedule: Schedule, window: int = REALIZED_WINDOW) -> RealizedRatio:
        """The ratio as a run that scheduled every step before ``step`` by ``schedule`` holds it (resume)."""
        first = max(0, step - window)
        recent = tuple(channel_for_step(s, schedule=schedule) for s in range(first, step))
        return cls(window=window, recent=recent, last_step=step - 1 if step > 0 else None)

    @property
    def realized(self) -> float:
        """Fraction of B among the recorded steps in the window; 0.0 before any step."""
        if not self.recent:
            return 0.0
        return sum(c is Channel.B for c in self.recent) / len(self.recent)
