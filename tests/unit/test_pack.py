"""Segment selection and the carry buffer (reference rollout 8.5, 14.6 K1..K6; AB 9 E4, E5)."""

from __future__ import annotations

from types import ModuleType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.pack import (
    PackBuffer,
    SegmentRef,
    drain,
    insert,
    pop_pack,
    require_binpacking,
    select_segments,
)
from coordexp.errors import PackingError

CATALOGUE = [
    # (lengths, cap, indices, total, fifo_total)
    ([6, 3, 2, 2, 2], 10, (0, 2, 3), 10, 9),
    ([6, 3, 2, 2], 10, (0, 2, 3), 10, 9),
    ([2, 9, 5, 4, 1], 10, (0, 2, 4), 8, 8),
    ([10], 10, (0,), 10, 10),
    ([4, 4, 4, 4], 10, (0, 1), 8, 8),
    ([5, 5, 5], 10, (0, 1), 10, 10),
    ([9, 2, 1], 10, (0, 2), 10, 10),
    ([3, 8, 7, 2], 10, (0, 2), 10, 10),
    ([1, 9, 9, 9], 10, (0, 1), 10, 10),
    ([7, 6, 3, 3], 12, (0, 2), 10, 10),
]


def _fifo_total(lengths: list[int], cap: int) -> int:
    total = lengths[0]
    for n in lengths[1:]:
        if total + n <= cap:
            total += n
    return total


def _missing(name: str) -> ModuleType:
    raise ModuleNotFoundError(f"No module named {name!r}")


def _buffer(capacity: int = 8, cap: int = 10, segs: tuple[SegmentRef, ...] = ()) -> PackBuffer:
    return PackBuffer(capacity=capacity, cap=cap, min_fill_ratio=0.65, segments=segs)


@pytest.mark.parametrize(("lengths", "cap", "indices", "total", "fifo"), CATALOGUE)
def test_catalogue_examples(lengths, cap, indices, total, fifo):
    sel = select_segments(lengths, cap)
    assert sel.indices == indices
    assert sel.total == total
    assert sel.fifo_total == fifo
    assert sel.used_binpacking == (total > fifo)


def test_gain_vs_fifo_reported():
    assert select_segments([6, 3, 2, 2], 10).gain_vs_fifo == pytest.approx(10 / 9)


lengths_strategy = st.integers(1, 40).flatmap(
    lambda cap: st.tuples(st.just(cap), st.lists(st.integers(1, cap), min_size=1, max_size=12))
)


@settings(max_examples=300, deadline=None)
@given(lengths_strategy)
def test_never_worse_than_fifo_and_valid(case):
    cap, lengths = case
    sel = select_segments(lengths, cap)
    assert sel.indices[0] == 0
    assert list(sel.indices) == sorted(set(sel.indices))
    assert sel.total == sum(lengths[i] for i in sel.indices) <= cap
    assert sel.fifo_total == _fifo_total(lengths, cap)
    assert sel.total >= sel.fifo_total


@settings(max_examples=200, deadline=None)
@given(lengths_strategy)
def test_selection_is_deterministic(case):
    cap, lengths = case
    assert select_segments(lengths, cap) == select_segments(list(lengths), cap)


def test_missing_binpacking_error_says_install_and_disable():
    with pytest.raises(ImportError) as info:
        select_segments([6, 3], 10, importer=_missing)
    msg = str(info.value)
    assert "binpacking" in msg and "install" in msg and "disable training.packing" in msg
    with pytest.raises(ImportError):
        require_binpacking(_missing)


def test_select_rejects_bad_buffers():
    with pytest.raises(PackingError, match="empty buffer"):
        select_segments([], 10)
    with pytest.raises(PackingError, match="encoded_len=11"):
        select_segments([3, 11], 10)
    with pytest.raises(PackingError, match="non-positive"):
        select_segments([0, 3], 10)


def test_oversize_insert_refused_and_buffer_unchanged():
    buf = _buffer(segs=(SegmentRef("a", 3),))
    with pytest.raises(PackingError) as info:
        insert(buf, [SegmentRef("b", 2), SegmentRef("c", 11)])
    msg = str(info.value)
    assert "encoded_len=11" in msg and "packing_length=10" in msg and "Mitigations:" in msg
    assert buf.segments == (SegmentRef("a", 3),)


def test_overflow_refused_and_buffer_unchanged():
    buf = insert(_buffer(capacity=1), [SegmentRef("a", 4)])
    with pytest.raises(PackingError) as info:
        insert(buf, [SegmentRef("b", 4)])
    assert "buffer overflow: buffer_size=2 > packing_buffer=1" in str(info.value)
    assert "Mitigations:" in str(info.value)
    assert buf.size == 1


def test_duplicate_and_empty_segments_refused():
    buf = insert(_buffer(), [SegmentRef("a", 4)])
    with pytest.raises(PackingError, match="already buffered"):
        insert(buf, [SegmentRef("a", 2)])
    with pytest.raises(PackingError, match="encoded_len=0"):
        insert(buf, [SegmentRef("z", 0)])


def test_buffer_config_validated():
    with pytest.raises(ValueError, match="packing_buffer"):
        PackBuffer(capacity=0, cap=10, min_fill_ratio=0.5)
    with pytest.raises(ValueError, match="packing_min_fill_ratio"):
        PackBuffer(capacity=4, cap=10, min_fill_ratio=0.0)


def test_pop_pack_takes_selection_and_carries_the_rest():
    buf = insert(_buffer(), [SegmentRef(k, n) for k, n in zip("abcde", [6, 3, 2, 2, 2])])
    pack, rest = pop_pack(buf)
    assert [s.key for s in pack.segments] == ["a", "c", "d"]
    assert (pack.total_len, pack.fifo_total, pack.used_binpacking) == (10, 9, True)
    assert pack.fill == 1.0 and not pack.underfilled
    assert [s.key for s in rest.segments] == ["b", "e"]
    assert pack.buffer_remaining == 2
    assert buf.size == 5  # the input buffer is a value and stays as it was


def test_underfilled_flag():
    pack, _ = pop_pack(insert(_buffer(), [SegmentRef("a", 3)]))
    assert pack.fill == pytest.approx(0.3)
    assert pack.underfilled


def test_pop_from_empty_buffer_is_an_error():
    with pytest.raises(PackingError, match="empty buffer"):
        pop_pack(_buffer())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 10), min_size=0, max_size=20))
def test_drain_packs_every_segment_exactly_once(lengths):
    buf = insert(_buffer(capacity=32), [SegmentRef(f"s{i}", n) for i, n in enumerate(lengths)])
    packs = drain(buf)
    keys = [s.key for p in packs for s in p.segments]
    assert sorted(keys) == sorted(s.key for s in buf.segments)
    assert all(p.total_len <= buf.cap for p in packs)
    if packs:
        assert packs[-1].buffer_remaining == 0
    # each pack starts with the oldest segment still waiting, so FIFO order of heads is preserved
    heads = [int(p.segments[0].key[1:]) for p in packs]
    assert heads == sorted(heads)
    assert drain(buf) == packs
