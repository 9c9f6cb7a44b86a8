"""Step metrics of packing, of the A/B schedule and of the desc monitor, from the core records that describe them.

They are base keys only (sums, last values, flags); the per-pack means of the metrics reference are
ratios the window derives from these sums, so a window of several steps weighs every pack equally
(reference rollout §12.2 took a mean per step, then a mean of those means).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

import attrs

from coordexp.core.coordjson import GTObject
from coordexp.core.match import MatchResult
from coordexp.core.pack import Pack
from coordexp.core.schedule import Channel, RatioSchedule, RealizedRatio, Schedule, channel_for_step

if TYPE_CHECKING:
    from coordexp.telemetry.desc_monitor import DescMonitor

EMA_WEIGHT = 0.2  # weight of the newest pack in packing/avg_segment_len_ema (legacy value)


@attrs.frozen
class PackLengthEma:
    """The running mean segment length over packs; carried by the executor from pack to pack."""

    ema: float | None = None  # tokens; None before the first pack
    last: float | None = None  # tokens, mean segment length of the latest pack

    def update(self, pack: Pack) -> PackLengthEma:
        mean = pack.total_len / len(pack.segments)
        ema = mean if self.ema is None else (1.0 - EMA_WEIGHT) * self.ema + EMA_WEIGHT * mean
        return PackLengthEma(ema=ema, last=mean)


def pack_metrics(packs: Sequence[Pack], ema: PackLengthEma) -> tuple[dict[str, float], PackLengthEma]:
    """The packing keys of one step's packs (in pop order) and the EMA after them.

    A step without packs reports nothing (no packing key), so it does not dilute the window's means.
    """
    if not packs:
        return {}, ema
    for pack in packs:
        ema = ema.update(pack)
    metrics = {
        "packing/post_rollout_packs": float(len(packs)),
        "packing/post_rollout_fill_sum": sum(p.fill for p in packs),
        "packing/post_rollout_len_sum": float(sum(p.total_len for p in packs)),
        "packing/post_rollout_segments_sum": float(sum(len(p.segments) for p in packs)),
        "packing/post_rollout_fifo_len_sum": float(sum(p.fifo_total for p in packs)),
        "packing/post_rollout_buffer": float(packs[-1].buffer_remaining),
        "packing/post_rollout_underfilled": float(sum(p.underfilled for p in packs)),
        "packing/avg_segment_len_last": float(ema.last),
        "packing/avg_segment_len_ema": float(ema.ema),
    }
    return metrics, ema


def schedule_metrics(step: int, *, schedule: Schedule, realized: RealizedRatio) -> dict[str, float]:
    """Stage-2 AB channel flags of ``step``, the b_ratio piece in effect and the realised ratio.

    ``realized`` must already hold ``step`` (``RealizedRatio.record``); a pattern schedule has no
    scheduled ratio, so ``stage2_ab/b_ratio_scheduled`` is its pattern's share of B.
    """
    channel = channel_for_step(step, schedule=schedule)
    if isinstance(schedule, RatioSchedule):
        scheduled = schedule.piece_at(step).value
    else:
        scheduled = sum(c is Channel.B for c in schedule.pattern) / len(schedule.pattern)
    return {
        "stage2/channel_a": float(channel is Channel.A),
        "stage2/channel_b": float(channel is Channel.B),
        "stage2_ab/b_ratio_scheduled": float(scheduled),
        "stage2_ab/b_ratio_realized": float(realized.realized),
    }


class _HasDesc(Protocol):
    desc: str


MatchedSample = tuple[Sequence[_HasDesc], Sequence[GTObject], MatchResult]  # (preds Match saw, GT, match)


def matched_descs(samples: Iterable[MatchedSample]) -> list[tuple[str, str]]:
    """(pred desc, GT desc) of every matched pair, sample by sample in match order."""
    return [(preds[p].desc, gt[g].desc) for preds, gt, match in samples for p, g in match.matched_pairs]


def desc_metrics(monitor: DescMonitor | None, samples: Iterable[MatchedSample], *, step: int | None = None,
                 prefix: str = "rollout") -> dict[str, float]:
    """The desc monitor's keys of one step with rollouts (``step``: only when due) or of one eval pass (None).

    Nothing when the monitor is off or not due, so those steps do not dilute the window's sums.
    """
    if monitor is None or (step is not None and not monitor.due(step)):
        return {}
    return monitor.metrics(matched_descs(samples), prefix=prefix)
