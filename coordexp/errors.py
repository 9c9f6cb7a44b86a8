"""Every exception coordexp raises on purpose.

Messages follow one shape: what went wrong, where (dotted config key, file:line or sample id), and
how to fix it. Callers catch these by class; nothing in the project catches a bare ``Exception``.
"""

from __future__ import annotations


class CoordexpError(Exception):
    """Base class, so a user script can catch everything coordexp raises deliberately."""


class ConfigError(CoordexpError):
    """A configuration is invalid.

    ``messages`` holds every problem found in one pass (a user fixes them all at once rather than
    one per run); ``str()`` joins them one per line.
    """

    def __init__(self, messages: list[str] | str, *, source: str | None = None) -> None:
        if isinstance(messages, str):
            messages = [messages]
        self.messages = list(messages)
        self.source = source
        head = f"invalid config {source}" if source else "invalid config"
        body = "\n".join(f"  - {m}" for m in self.messages)
        super().__init__(f"{head} ({len(self.messages)} problem(s)):\n{body}")


class ConfigWarning(UserWarning):
    """A configuration is valid but likely not what the user wants (e.g. too small a length budget)."""


class DataError(CoordexpError):
    """An input record (JSONL line, fixture, recording) breaks the data contract."""


class TokenizerError(CoordexpError):
    """The tokenizer lacks what coordexp needs (coord vocabulary, chat markers)."""


class AppendError(CoordexpError):
    """A rollout prefix is not append-ready, so FN objects cannot be serialized after it."""


class TargetError(CoordexpError):
    """A teacher-forced target would supervise a position outside its allowed span."""


class PackingError(CoordexpError):
    """A segment does not fit a pack, or the carry buffer overflowed."""


class SegmentTooLongError(PackingError):
    """One sample's teacher-forced segment is longer than a packed row: that sample is dropped and counted."""


class SpecError(CoordexpError):
    """A spec document or fixture breaks the spec conventions (ids, WHEN/THEN, traceability)."""


class TelemetryError(CoordexpError):
    """A metric key or a telemetry record breaks the key registry or a log format."""


class RolloutError(CoordexpError):
    """A rollout backend was asked for something it cannot do, or produced something unusable."""


class LossError(CoordexpError, ValueError):
    """A loss was given inputs it cannot score (a bin outside 0..999, a slot without a logits row, a
    coord-id table that is not the 1000 coord tokens) or produced a non-finite value.

    Raised, never turned into a zero loss: a zeroed coord loss trains on the CE alone and looks healthy.
    A ``ValueError`` too, since these are bad argument values.
    """


class StabilityStop(CoordexpError):
    """The stability guard stopped the run (``custom.extra.stability_guard.action``); a checkpoint was saved.

    The message names the alarm, the metric, the threshold and the checkpoint to start a fixed run from.
    """
