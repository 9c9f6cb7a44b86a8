"""Post-rollout packing: which buffered segments go into the next packed row, and the carry buffer.

Every teacher-forced segment (one sample's ``Y_train`` encoding) is atomic. Segments wait in a FIFO
carry buffer; each pack always takes the oldest one (so nothing starves) and then fills the remaining
room. Filling uses constant-volume bin packing from the ``binpacking`` package, but only when that
beats a plain FIFO-greedy scan: a pack is never emptier than FIFO would have made it.

Everything here is pure and deterministic: ties between equally full candidates are broken by fewer
segments, then by the lexicographically smallest index tuple, so the same buffer always yields the
same packs on every rank and every rerun.

The buffer is a value: ``insert``/``pop_pack``/``drain`` return new buffers. A failed insert raises
before anything changes, so the caller still holds the buffer it had.

``drain`` is the multi-pack-per-step mode: all segments of an optimizer step are packed within that
step, which removes the legacy failure where one pack per micro-step let the buffer grow until it
overflowed (reference rollout 15.2 R1).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from types import ModuleType

import attrs

from coordexp.errors import PackingError

Importer = Callable[[str], ModuleType]

_MISSING_BINPACKING = (
    "post-rollout packing needs the `binpacking` package, which cannot be imported. "
    "Fix: install `binpacking` (it is a coordexp dependency: `pip install binpacking`), "
    "or disable training.packing."
)

OVERSIZE_MITIGATIONS = (
    "Mitigations: raise global_max_length (the packing length), lower rollout_matching.max_new_tokens, "
    "or disable training.packing."
)

_OVERFLOW_MITIGATIONS = (
    "Mitigations: reduce per_device_train_batch_size, increase training.packing_buffer, "
    "or pack every segment within its optimizer step (training.packing_mode: step; for stage2_ab_training "
    "stage2_ab.channel_b.mode: step)."
)


def require_binpacking(importer: Importer = importlib.import_module) -> ModuleType:
    """Import ``binpacking`` or fail with install/disable guidance.

    ``importer`` is the seam that lets a test or a scenario simulate a missing package without
    uninstalling it. There is deliberately no FIFO-only fallback: a run configured for bin packing
    silently packing worse would be a degraded path nobody sees.
    """
    try:
        return importer("binpacking")
    except ImportError as exc:
        raise ImportError(_MISSING_BINPACKING) from exc


@attrs.frozen
class Selection:
    """Which buffer positions form the next pack.

    ``indices`` are positions in the buffer (0 = oldest), ascending, always containing 0.
    ``fifo_total`` is what the FIFO-greedy baseline would have packed, kept so that a benchmark can
    report how much bin packing gains.
    """

    indices: tuple[int, ...]  # buffer positions, ascending
    total: int  # tokens
    fifo_total: int  # tokens
    used_binpacking: bool

    @property
    def gain_vs_fifo(self) -> float:
        """``total / fifo_total`` (>= 1.0 by construction)."""
        return self.total / self.fifo_total


def _check_lengths(lengths: Sequence[int], cap: int) -> None:
    if cap <= 0:
        raise PackingError(f"packing_length must be > 0, got {cap}; set global_max_length")
    if not lengths:
        raise PackingError("cannot select a pack from an empty buffer (guard the Pack step on has_segments)")
    if lengths[0] <= 0:
        raise PackingError(f"oldest segment has non-positive length {lengths[0]}; segments must be non-empty")
    too_long = [(i, n) for i, n in enumerate(lengths) if n > cap]
    if too_long:
        i, n = too_long[0]
        raise PackingError(
            f"buffered segment {i} has encoded_len={n} > packing_length={cap}; "
            "such a segment must be rejected at insert"
        )


def _fifo_greedy(lengths: Sequence[int], cap: int) -> tuple[int, ...]:
    """Oldest first, then every later segment that still fits, in insertion order."""
    chosen = [0]
    total = lengths[0]
    for i in range(1, len(lengths)):
        n = lengths[i]
        if 0 < n <= cap - total:
            chosen.append(i)
            total += n
    return tuple(chosen)


def _best_bin(lengths: Sequence[int], room: int, binpacking: ModuleType) -> tuple[int, ...]:
    """Fill ``room`` tokens from segments 1..n-1: the fullest constant-volume bin, ties deterministic."""
    items = [(i, n) for i, n in enumerate(lengths) if i >= 1 and 0 < n <= room]
    if not items:
        return ()
    bins = binpacking.to_constant_volume(items, room, weight_pos=1)

    def key(b: list[tuple[int, int]]) -> tuple[int, int, tuple[int, ...]]:
        return (-sum(n for _, n in b), len(b), tuple(sorted(i for i, _ in b)))

    best = min(bins, key=key)
    return tuple(sorted(i for i, _ in best))


def select_segments(
    lengths: Sequence[int], cap: int, *, importer: Importer = importlib.import_module
) -> Selection:
    """Pick the segments of the next pack (reference rollout 8.5).

    The candidate from bin packing is taken only when it is strictly fuller than the FIFO baseline;
    on a tie FIFO wins, which keeps the oldest segments moving.
    """
    binpacking = require_binpacking(importer)
    _check_lengths(lengths, cap)
    fifo = _fifo_greedy(lengths, cap)
    fifo_total = sum(lengths[i] for i in fifo)
    room = cap - lengths[0]
    if room > 0:
        candidate = (0, *_best_bin(lengths, room, binpacking))
        cand_total = sum(lengths[i] for i in candidate)
        if cand_total > fifo_total:
            return Selection(candidate, cand_total, fifo_total, used_binpacking=True)
    return Selection(fifo, fifo_total, fifo_total, used_binpacking=False)


@attrs.frozen
class SegmentRef:
    """A buffered segment, by reference: the encoding itself stays with the caller under ``key``."""

    key: str
    length: int  # tokens (encoded_len)


def _positive(name: str) -> Callable[[object, attrs.Attribute, int], None]:
    def check(_inst: object, _attr: attrs.Attribute, value: int) -> None:
        if value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")

    return check


def _fill_ratio(_inst: object, _attr: attrs.Attribute, value: float) -> None:
    if not 0.0 < value <= 1.0:
        raise ValueError(f"training.packing_min_fill_ratio must be in (0, 1], got {value}")


@attrs.frozen
class PackBuffer:
    """The carry-only FIFO buffer of one channel on one rank.

    ``capacity`` counts segments (``training.packing_buffer``), ``cap`` counts tokens
    (``packing_length``). ``min_fill_ratio`` only labels packs as underfilled; it never holds a
    segment back.
    """

    capacity: int = attrs.field(validator=_positive("training.packing_buffer"))
    cap: int = attrs.field(validator=_positive("packing_length (global_max_length)"))
    min_fill_ratio: float = attrs.field(validator=_fill_ratio)
    segments: tuple[SegmentRef, ...] = ()  # insertion order, oldest first

    @property
    def size(self) -> int:
        return len(self.segments)


@attrs.frozen
class Pack:
    """One packed row: the selected segments in concatenation (= insertion) order, and its telemetry."""

    segments: tuple[SegmentRef, ...]
    total_len: int  # tokens
    fill: float  # total_len / packing_length
    fifo_total: int  # tokens FIFO-greedy would have packed
    used_binpacking: bool
    buffer_remaining: int  # segments left in the buffer after this pack
    underfilled: bool  # fill < min_fill_ratio; counted by the caller as a metric

    @property
    def gain_vs_fifo(self) -> float:
        """``total_len / fifo_total``: how much fuller than FIFO-greedy this pack is."""
        return self.total_len / self.fifo_total


def _check_insert(buffer: PackBuffer, new: tuple[SegmentRef, ...]) -> None:
    """Every reason to refuse an insert, checked before the buffer changes."""
    seen = {s.key for s in buffer.segments}
    for seg in new:
        if seg.length <= 0:
            raise PackingError(
                f"segment {seg.key!r} has encoded_len={seg.length}; segments must be non-empty"
            )
        if seg.length > buffer.cap:
            raise PackingError(
                f"post-rollout packing cannot fit a single segment: encoded_len={seg.length} > "
                f"packing_length={buffer.cap} (segment {seg.key!r}). {OVERSIZE_MITIGATIONS}"
            )
        if seg.key in seen:
            raise PackingError(f"segment key {seg.key!r} is already buffered; keys must be unique per buffer")
        seen.add(seg.key)
    size = buffer.size + len(new)
    if size > buffer.capacity:
        raise PackingError(
            f"post-rollout packing buffer overflow: buffer_size={size} > "
            f"packing_buffer={buffer.capacity}. {_OVERFLOW_MITIGATIONS}"
        )


def insert(buffer: PackBuffer, segments: Iterable[SegmentRef]) -> PackBuffer:
    """Append segments to the buffer, all or nothing."""
    new = tuple(segments)
    _check_insert(buffer, new)
    return attrs.evolve(buffer, segments=buffer.segments + new)


def pop_pack(buffer: PackBuffer, *, importer: Importer = importlib.import_module) -> tuple[Pack, PackBuffer]:
    """Select the next pack and return it with the buffer that carries the rest."""
    sel = select_segments([s.length for s in buffer.segments], buffer.cap, importer=importer)
    chosen = set(sel.indices)
    picked = tuple(buffer.segments[i] for i in sel.indices)
    rest = tuple(s for i, s in enumerate(buffer.segments) if i not in chosen)
    fill = sel.total / buffer.cap
    pack = Pack(
        segments=picked,
        total_len=sel.total,
        fill=fill,
        fifo_total=sel.fifo_total,
        used_binpacking=sel.used_binpacking,
        buffer_remaining=len(rest),
        underfilled=fill < buffer.min_fill_ratio,
    )
    return pack, attrs.evolve(buffer, segments=rest)


def drain(buffer: PackBuffer, *, importer: Importer = importlib.import_module) -> tuple[Pack, ...]:
    """Pack everything in the buffer (multi-pack-per-step); the buffer is empty afterwards.

    Every pop removes at least the oldest segment, so this ends after at most ``buffer.size`` packs.
    """
    packs: list[Pack] = []
    while buffer.segments:
        pack, buffer = pop_pack(buffer, importer=importer)
        packs.append(pack)
    return tuple(packs)
