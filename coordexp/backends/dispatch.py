"""How one generate call's requests are cut into chunks, spread over rollout servers, and put back in order.

Why a module of its own: the rule is arithmetic on request indices, and the server backend's threads and HTTP
calls should not hide it (``coordexp.backends.vllm_server`` takes its plan from here; the spec scenarios
AB-ROLLOUT-001/002/004 check it without a server). Everything is ``[start, end)`` request indices, contiguous
and in input order, so results are reassembled by position and never reordered.

- ``weighted_slices``: ``n`` items over parts in proportion to weights, floors first, the remainder to the
  largest fractional parts, ties to the lower index (all-zero weights: equal parts);
- ``even_slices``: the same with equal weights (the larger slices first);
- ``chunk_slices``: fixed-size chunks (``decode_batch_size``), the last one shorter;
- ``spread_chunks``: the chunks of a call as contiguous runs over the servers, each server's run in order, the
  runs sized by the servers' weights (their data-parallel sizes: a replica per chunk in flight);
- ``server_batches``: per server, the requests it keeps in flight together: ``replicas`` consecutive chunks of
  its run at a time (a data-parallel server of 3 replicas gets 3 chunks at once, one per replica).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from typing import TypeVar

from coordexp.errors import RolloutError

Slice = tuple[int, int]  # [start, end) request idx
T = TypeVar("T")


def weighted_slices(n: int, weights: Sequence[float]) -> tuple[Slice, ...]:
    """``n`` items as one contiguous slice per weight, sized by largest remainder (exact: no float rounding)."""
    if n < 0 or not weights or any(w < 0 for w in weights):
        raise ValueError(f"weighted_slices needs n >= 0 and non-negative weights, got n={n}, weights={list(weights)}")
    exact = [Fraction(w) for w in weights]
    total = sum(exact)
    if total == 0:
        exact, total = [Fraction(1)] * len(weights), Fraction(len(weights))
    shares = [n * w / total for w in exact]
    sizes = [int(s) for s in shares]  # floors (shares are >= 0)
    by_remainder = sorted(range(len(shares)), key=lambda i: (-(shares[i] - sizes[i]), i))
    for i in by_remainder[: n - sum(sizes)]:
        sizes[i] += 1
    out, start = [], 0
    for size in sizes:
        out.append((start, start + size))
        start += size
    return tuple(out)


def even_slices(n: int, parts: int) -> tuple[Slice, ...]:
    """``n`` items in ``parts`` contiguous slices whose sizes differ by at most one, the larger first."""
    if parts < 1:
        raise ValueError(f"even_slices needs at least one part, got {parts}")
    return weighted_slices(n, (1,) * parts)


def chunk_slices(n: int, size: int) -> tuple[Slice, ...]:
    """``n`` items in chunks of ``size`` (the last one may be shorter); no chunk for ``n == 0``."""
    if size < 1:
        raise ValueError(f"chunk_slices needs a chunk size >= 1, got {size}")
    return tuple((start, min(start + size, n)) for start in range(0, n, size))


def spread_chunks(n: int, *, chunk: int, weights: Sequence[int]) -> tuple[tuple[Slice, ...], ...]:
    """Per server, the chunks it rolls out: contiguous runs of the call's chunks, sized by the servers' weights."""
    chunks = chunk_slices(n, chunk)
    return tuple(chunks[a:b] for a, b in weighted_slices(len(chunks), weights))


def server_batches(n: int, *, chunk: int, replicas: Sequence[int]) -> tuple[tuple[Slice, ...], ...]:
    """Per server, its in-flight batches one after the other: ``replicas[s]`` consecutive chunks merged, so a
    server of ``r`` data-parallel replicas has ``chunk * r`` requests in flight and all servers finish their
    runs in about as many rounds."""
    if any(r < 1 for r in replicas):
        raise ValueError(f"server_batches needs every server's replica count >= 1, got {list(replicas)}")
    out = []
    for mine, r in zip(spread_chunks(n, chunk=chunk, weights=replicas), replicas, strict=True):
        groups = (mine[i : i + r] for i in range(0, len(mine), r))
        out.append(tuple((group[0][0], group[-1][1]) for group in groups))
    return tuple(out)


def reassemble(parts: Sequence[Sequence[T]], slices: Sequence[Slice]) -> list[T]:
    """The results of each slice put back in input order; a part of the wrong length is an error, never a gap."""
    if len(parts) != len(slices):
        raise RolloutError(f"reassemble: {len(parts)} result parts for {len(slices)} slices")
    out: list[T] = []
    for part, (start, end) in zip(parts, slices, strict=True):
        if start != len(out) or len(part) != end - start:
            raise RolloutError(f"reassemble: slice [{start}, {end}) got {len(part)} results after {len(out)} in order")
        out.extend(part)
    return out
