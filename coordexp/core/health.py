"""Per-sample health checks of one rollout, as seed runbook 000 computed them by hand (sections 3.4, 6.3).

Why here: the checks are pure functions of a ``ParseResult`` (and the objects it kept), so training
telemetry (``rollout/invalid_coord_slots``) and the offline diagnosis (``python -m coordexp.replay``)
count a geometry slot, a duplicate or a valid JSON answer by the same rule. The healthy ranges of the
seed (sections 5 and 6) live here too, with the config-first cure each one points to, so the report
and its tests read one table.

- ``non_coord_slot_values``: the geometry-slot elements of dropped objects that are not a coord token;
- ``slot_class``: plain digits, non-ASCII, leading space or other (first matching class wins);
- ``is_valid_json``: strict ``json.loads`` of the whole answer (after the ``<|im_end|>`` cut);
- ``near_duplicate_pairs``: pairs of kept objects with the same desc and IoU >= 0.9, by the
  near-duplicate rule of ``coordexp.core.duplicates``.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from coordexp.core.coords import parse_coord_token
from coordexp.core.duplicates import NearDuplicates
from coordexp.core.parse_records import ParsedObject, ParseResult
from coordexp.core.tokens import IM_END, TokenContext

NEAR_DUPLICATE_IOU = 0.9  # seed 000 section 5.5: "same desc + bbox IoU" counts as the same object

_GEOM_OPEN = re.compile(r'"(?:bbox_2d|poly)"\s*:\s*\[')
_ELEMENT = re.compile(r'"[^"]*"?|[^\s,\[\]"]+')
_DIGITS = re.compile(r"[+-]?\d+(?:\.\d+)?")


class SlotClass(enum.StrEnum):
    """What a non-coord geometry slot holds (seed 000 section 3.4.2); checked in this order."""

    PLAIN_DIGITS = "plain_digits"  # "720", "0"
    NON_ASCII = "non_ascii"  # "尼斯"
    LEADING_SPACE = "leading_space"  # " Country"
    OTHER = "other"


def slot_class(value: str) -> SlotClass:
    """The class of one slot value as emitted (quotes removed, nothing else)."""
    if _DIGITS.fullmatch(value):
        return SlotClass.PLAIN_DIGITS
    if any(ord(ch) > 127 for ch in value):
        return SlotClass.NON_ASCII
    if value[:1].isspace():
        return SlotClass.LEADING_SPACE
    return SlotClass.OTHER


def non_coord_slot_values(parse: ParseResult, *, ctx: TokenContext) -> tuple[str, ...]:
    """Geometry slots of dropped objects that hold anything but a coord token, in appearance order.

    Reads each dropped object's own bytes of the response: the elements of its ``bbox_2d`` / ``poly``
    array, quoted or bare, nested pairs flattened; an unclosed array runs to the end of the object.
    Valid objects hold coord tokens only, so they are not read.
    """
    if not parse.dropped:
        return ()
    data = ctx.bytes_of(parse.response_ids)
    out: list[str] = []
    for obj in parse.dropped:
        text = data[obj.value_span[0]:obj.value_span[1]].decode("utf-8", errors="replace")
        m = _GEOM_OPEN.search(text)
        if m is None:
            continue
        for element in _ELEMENT.findall(_array_body(text, m.end())):
            value = element.strip('"')
            if parse_coord_token(value) is None:
                out.append(value)
    return tuple(out)


def _array_body(text: str, start: int) -> str:
    depth, in_str = 1, False
    for i in range(start, len(text)):
        ch = text[i]
        if ch == '"':
            in_str = not in_str
        elif not in_str and ch == "[":
            depth += 1
        elif not in_str and ch == "]":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return text[start:]


def is_valid_json(parse: ParseResult) -> bool:
    """Whether the whole answer, ``<|im_end|>`` removed, is one JSON object for a strict ``json.loads``.

    Looser than a parse-valid answer (no check of the objects inside): what seed 000 counted in the
    vLLM dumps ("valid rollout JSON: 10 / 16").
    """
    try:
        return isinstance(json.loads(parse.response_text.replace(IM_END, "")), dict)
    except json.JSONDecodeError:
        return False


def near_duplicate_pairs(objects: Sequence[ParsedObject], *, iou_threshold: float = NEAR_DUPLICATE_IOU) -> int:
    """Pairs (i < j) of kept objects that nearly duplicate each other: same desc and IoU >= threshold.

    Each pair is judged by ``NearDuplicates`` itself, so this count and the ``duplicate_object`` stop
    rule never disagree on what a duplicate is.
    """
    pairs = 0
    for j, later in enumerate(objects):
        for earlier in objects[:j]:
            seen = NearDuplicates(iou_threshold=iou_threshold, same_desc=True)
            seen.add(earlier.desc, earlier.geom_type, earlier.coord_bins)
            pairs += seen.add(later.desc, later.geom_type, later.coord_bins)
    return pairs


@attrs.frozen
class HealthyRange:
    """One figure's healthy range (seed 000 sections 5-6) and the config-first cure when it is out."""

    key: str  # metrics.json key
    low: float | None  # inclusive; None = unbounded
    high: float | None  # inclusive; None = unbounded
    seed_says: str
    cures: tuple[Cure, ...]

    def holds(self, value: float) -> bool:
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def cure(self, value_of: Callable[[str], Any]) -> str:
        """The cures the run's config does not apply yet; ``value_of(dotted key)`` reads that config and
        returns ``NOT_APPLICABLE`` where the key's section is absent (e.g. no stage2_ab for an SFT run).

        Suggesting what the config already does would send the user in a circle, so those are left out,
        and when nothing is left the answer says so.
        """
        todo = [c.advice for c in self.cures if (v := value_of(c.key)) is not NOT_APPLICABLE and not c.applied(v)]
        if todo:
            return "; ".join(todo)
        return "the config already applies the seed's config-first cures for this figure; inspect the rollouts"


NOT_APPLICABLE = object()  # what ``value_of`` returns for a key whose config section is absent


@attrs.frozen
class Cure:
    """One config-first cure of seed 000: the key, the advice, and whether a config value already applies it."""

    key: str  # canonical dotted config key
    advice: str
    applied: Callable[[Any], bool]


def _most(value: Any) -> float | None:
    """A b_ratio as its largest share: a number, or the largest piece of a ramp (None for a pattern)."""
    if isinstance(value, int | float):
        return float(value)
    values = [getattr(piece, "value", None) for piece in value or ()]
    return max((float(v) for v in values if v is not None), default=None)


_RT = "custom.extra.rollout_matching.repeat_terminate"
_CAP = Cure(f"{_RT}.max_object_keys", f"{_RT}.max_object_keys: 60 (object-count stop, seed 5.2)",
            lambda v: v is not None and v <= 60)
_BUDGET = Cure("custom.extra.rollout_matching.max_new_tokens",
               "custom.extra.rollout_matching.max_new_tokens: 2048 or lower (seed 5.3)", lambda v: v <= 2048)
_SCHEDULE = Cure("custom.extra.stage2_ab.schedule.b_ratio",
                 "custom.extra.stage2_ab.schedule.b_ratio: 0.05 (A hot / B cold, seed 5.1)",
                 lambda v: (m := _most(v)) is not None and m <= 0.05)
_INVALID = Cure("custom.extra.stage2_ab.channel_b.drop_invalid_struct_ce_multiplier",
                "custom.extra.stage2_ab.channel_b.drop_invalid_struct_ce_multiplier > 1 (make invalid rollouts "
                "expensive, seed 5.4)", lambda v: v > 1)
_DUPLICATE = Cure(f"{_RT}.duplicate_object.enabled",
                  f"{_RT}.duplicate_object.enabled: true (near-duplicate stop, seed 5.5)", bool)

HEALTHY: tuple[HealthyRange, ...] = (
    HealthyRange("diagnosis/valid_json_rate", 0.95, None, "rollout JSON should parse at >95% (ideally 100%)",
                 (_CAP, _BUDGET)),
    HealthyRange("rollout/parse_truncated_rate", None, 0.05, "low, ideally < 0.05", (_CAP, _BUDGET, _SCHEDULE)),
    HealthyRange("diagnosis/drop_rate", None, 0.05, "dropped / raw objects should be small (bad run: 25.7%)",
                 (_INVALID, _SCHEDULE)),
    HealthyRange("diagnosis/slot_tokens_total", None, 0.0, "invalid bbox-slot tokens near 0 (bad run: 275 in 20)",
                 (_INVALID, _SCHEDULE)),
    HealthyRange("diagnosis/max_same_desc", None, 19.0, "max duplicate label count per sample small (no 20-90 "
                 "repeats)", (_CAP, _DUPLICATE)),
    HealthyRange("diagnosis/near_duplicate_pairs", None, 0.0, "no near-identical repeated objects", (_DUPLICATE,)),
    HealthyRange("diagnosis/pred_gt_ratio", 0.5, 1.5, "pred / GT objects should move toward 1x (bad run: 2.2-2.4x)",
                 (_SCHEDULE, _CAP)),
    HealthyRange("diagnosis/gen_tokens_p90_over_cap", None, 0.9, "gen_new_tokens_p90 should not peg at "
                 "max_new_tokens", (_CAP, _BUDGET)),
)
