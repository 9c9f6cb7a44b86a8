"""The dispatch rule's invariants over many shapes (the scenario values are AB-ROLLOUT-001/002/004)."""

from __future__ import annotations

import itertools

import pytest

from coordexp.backends.dispatch import chunk_slices, even_slices, reassemble, spread_chunks, weighted_slices
from coordexp.errors import RolloutError


@pytest.mark.parametrize(("n", "weights"), [(n, w) for n in (0, 1, 7, 13) for w in ([1], [1, 1, 1], [0, 3], [2, 5, 1],
                                                                                    [0.5, 0.25, 0.25], [0, 0])])
def test_slices_tile_the_requests_in_order_and_follow_the_weights(n, weights):
    slices = weighted_slices(n, weights)
    assert [a for a, _ in slices] == [0, *[b for _, b in slices[:-1]]] and slices[-1][1] == n
    total = sum(weights) or len(weights)
    for (a, b), w in zip(slices, weights if sum(weights) else [1] * len(weights), strict=True):
        assert abs((b - a) - n * w / total) < 1  # largest remainder: within one of the exact share


def test_equal_weights_put_the_larger_slices_first():
    assert [b - a for a, b in even_slices(7, 3)] == [3, 2, 2]


def test_the_spread_covers_every_chunk_once_in_order():
    for n, chunk, servers in itertools.product((0, 1, 5, 24), (1, 2, 4), (1, 2, 3)):
        plan = spread_chunks(n, chunk=chunk, weights=[1] * servers)
        assert len(plan) == servers
        assert [c for mine in plan for c in mine] == list(chunk_slices(n, chunk))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="non-negative"):
        weighted_slices(3, [1, -1])
    with pytest.raises(ValueError, match="chunk size"):
        chunk_slices(3, 0)
    with pytest.raises(ValueError, match="at least one part"):
        even_slices(3, 0)


def test_reassembly_refuses_a_short_part_instead_of_leaving_a_gap():
    assert reassemble([[0, 1], [2]], [(0, 2), (2, 3)]) == [0, 1, 2]
    with pytest.raises(RolloutError, match=r"slice \[2, 3\) got 0 results"):
        reassemble([[0, 1], []], [(0, 2), (2, 3)])
