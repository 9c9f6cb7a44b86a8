"""Per-token labels of one assistant turn: the span rules of reference §6.5, written once.

``assistant_labels`` applies them to one target's assistant tokens (assistant-local positions):
prefix tokens get no CE unless listed as prefix structure positions, matched prefix coord positions
get their GT-derived bins, tail coord tokens get their own bin and no CE, listed tail positions are
ignored (desc values), every other tail token gets CE with its weight. BuildTarget calls it; every
position is checked, and a violation is a TargetError naming the sample and the position, never a
clamp.

Placing a target after its prompt and packing several targets into one row is the learner's job
(``coordexp.learn.segments``, ``coordexp.learn.packed``): it shifts these assistant-local positions by
the prompt length and the segment offset, and the one ignore label below is the one it uses.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from coordexp.errors import TargetError

IGNORE_INDEX = -100  # label of a position without CE (the torch CrossEntropy ignore index)


@attrs.frozen
class AssistantLabels:
    """Labels of one assistant span (``len(labels)`` = train_len), positions assistant-local."""

    ids: tuple[int, ...]
    prefix_len: int
    labels: tuple[int, ...]
    weights: tuple[float, ...]
    coord_positions: tuple[int, ...]  # ascending
    coord_bins: tuple[int, ...]
    coord_is_prefix: tuple[bool, ...]


def assistant_labels(
    ids: Sequence[int],
    *,
    prefix_len: int,
    coord_id_to_bin: Mapping[int, int],
    prefix_coord: Sequence[tuple[int, int]] = (),
    prefix_ce: Sequence[tuple[int, float]] = (),
    tail_ignore: Sequence[int] = (),
    tail_weights: Sequence[float] | None = None,
    sample_id: str = "?",
) -> AssistantLabels:
    """Apply the §6.5 span rules to one assistant span.

    Args:
        ids: ``Y_train`` ids (prefix, append, EOS); the tail is ``[prefix_len, len(ids))``.
        prefix_coord: ``(position, target bin)`` of matched prefix coord tokens.
        prefix_ce: ``(position, weight)`` of prefix tokens that get CE (matched-prefix structure).
        tail_ignore: tail-relative indices without CE (desc values; closure when switched off).
        tail_weights: CE weight per tail token (tail-relative); default 1.0 each.
    """
    n = len(ids)
    if not 0 <= prefix_len < n:
        raise TargetError(f"sample {sample_id}: prefix_len {prefix_len} leaves no tail in a {n}-token assistant span")
    tail_n = n - prefix_len
    if tail_weights is not None and len(tail_weights) != tail_n:
        raise TargetError(f"sample {sample_id}: {len(tail_weights)} tail weights for a {tail_n}-token tail")
    labels = [IGNORE_INDEX] * n
    weights = [0.0] * n
    coords: dict[int, tuple[int, bool]] = {}
    for pos, tbin in prefix_coord:
        _check_prefix_pos(pos, prefix_len, "coord target", sample_id)
        if ids[pos] not in coord_id_to_bin:
            raise TargetError(f"sample {sample_id}: prefix coord target at position {pos} is not a coord token")
        coords[pos] = (int(tbin), True)
    for pos, w in prefix_ce:
        _check_prefix_pos(pos, prefix_len, "structure CE", sample_id)
        if ids[pos] in coord_id_to_bin:
            raise TargetError(f"sample {sample_id}: prefix structure CE at position {pos} is a coord token")
        labels[pos], weights[pos] = ids[pos], float(w)
    ignore = set(tail_ignore)
    if ignore and not (min(ignore) >= 0 and max(ignore) < tail_n):
        raise TargetError(f"sample {sample_id}: tail ignore positions {sorted(ignore)} outside the {tail_n}-token tail")
    for rel in range(tail_n):
        pos = prefix_len + rel
        tid = ids[pos]
        if tid in coord_id_to_bin:
            coords[pos] = (coord_id_to_bin[tid], False)
        elif rel not in ignore:
            labels[pos], weights[pos] = tid, 1.0 if tail_weights is None else float(tail_weights[rel])
    order = sorted(coords)
    return AssistantLabels(
        ids=tuple(ids),
        prefix_len=prefix_len,
        labels=tuple(labels),
        weights=tuple(weights),
        coord_positions=tuple(order),
        coord_bins=tuple(coords[p][0] for p in order),
        coord_is_prefix=tuple(coords[p][1] for p in order),
    )


def _check_prefix_pos(pos: int, prefix_len: int, what: str, sample_id: str) -> None:
    if not 0 <= pos < prefix_len:
        raise TargetError(
            f"sample {sample_id}: {what} at assistant position {pos} is outside the assistant prefix span "
            f"[0, {prefix_len}) (a negative position lies in the prompt)"
        )
