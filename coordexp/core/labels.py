"""Per-token labels: the span rules of one assistant turn, and their placement in a (packed) row.

Two steps, both pure python:

1. ``assistant_labels`` applies the span rules of reference §6.5 to one target's assistant tokens
   (assistant-local positions): prefix tokens get no CE unless listed as prefix structure positions,
   matched prefix coord positions get their GT-derived bins, tail coord tokens get their own bin and
   no CE, listed tail positions are ignored (desc values), every other tail token gets CE with its
   weight. BuildTarget calls it, so the rule exists once.
2. ``row_labels`` places the labels of one or more segments into a row of input ids: segment ``s``
   occupies ``[offset_s, offset_s + encoded_len_s)`` and its assistant span starts at
   ``offset_s + prompt_len_s``. A packed row is just several segments, so the packed labels equal the
   concatenation of the per-segment labels by construction (reference 14.5 L3). Every span is
   checked; a violation is a TargetError naming the segment and the position, never a clamp.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from coordexp.core.target_records import IGNORE, TrainTarget
from coordexp.errors import TargetError


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
    labels = [IGNORE] * n
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


@attrs.frozen
class Segment:
    """One teacher-forced encoding inside a row: ``prompt + assistant labels (+ template suffix)``."""

    prompt_len: int  # tokens before the assistant span in this encoding
    encoded_len: int  # tokens this segment occupies in the row
    labels: AssistantLabels
    rollout_prompt_ids: tuple[int, ...] | None = attrs.field(
        default=None, converter=attrs.converters.optional(tuple)
    )  # prompt the rollout was generated from; checked against the row when given
    sample_id: str = "?"


@attrs.frozen
class RowLabels:
    """Labels of one row; coord supervision at absolute positions, with the owning segment index."""

    labels: tuple[int, ...]
    weights: tuple[float, ...]
    coord_positions: tuple[int, ...]
    coord_bins: tuple[int, ...]
    coord_is_prefix: tuple[bool, ...]
    coord_segment: tuple[int, ...]
    offsets: tuple[int, ...]  # start of each segment in the row


def row_labels(input_ids: Sequence[int], segments: Sequence[Segment]) -> RowLabels:
    """Labels for a row holding ``segments`` back to back (one segment = an un-packed sample)."""
    total = len(input_ids)
    labels = [IGNORE] * total
    weights = [0.0] * total
    coords: list[tuple[int, int, bool, int]] = []
    offsets = []
    offset = 0
    for s, seg in enumerate(segments):
        _check_segment(input_ids, seg, s, offset, total)
        start = offset + seg.prompt_len
        lab = seg.labels
        labels[start : start + len(lab.labels)] = lab.labels
        weights[start : start + len(lab.weights)] = lab.weights
        coords.extend((start + p, b, pre, s) for p, b, pre in zip(lab.coord_positions, lab.coord_bins, lab.coord_is_prefix))
        offsets.append(offset)
        offset += seg.encoded_len
    return RowLabels(
        labels=tuple(labels),
        weights=tuple(weights),
        coord_positions=tuple(c[0] for c in coords),
        coord_bins=tuple(c[1] for c in coords),
        coord_is_prefix=tuple(c[2] for c in coords),
        coord_segment=tuple(c[3] for c in coords),
        offsets=tuple(offsets),
    )


def _check_segment(input_ids: Sequence[int], seg: Segment, s: int, offset: int, total: int) -> None:
    where = f"segment {s} (sample {seg.sample_id})"
    if seg.encoded_len <= 0:
        raise TargetError(f"{where}: encoded_len must be > 0, got {seg.encoded_len}")
    end = offset + seg.encoded_len
    if end > total:
        raise TargetError(f"{where}: segment metadata overruns the row (ends at {end} > {total} tokens)")
    train_len = len(seg.labels.labels)
    if not 0 < seg.prompt_len < seg.encoded_len or seg.prompt_len + train_len > seg.encoded_len:
        raise TargetError(
            f"{where}: assistant span [{seg.prompt_len}, {seg.prompt_len + train_len}) does not fit inside "
            f"(0, {seg.encoded_len}]; the prompt must be non-empty and the target must not be truncated"
        )
    prompt = tuple(input_ids[offset : offset + seg.prompt_len])
    if seg.rollout_prompt_ids is not None and prompt != seg.rollout_prompt_ids:
        at = next((i for i, (a, b) in enumerate(zip(prompt, seg.rollout_prompt_ids)) if a != b), min(len(prompt), len(seg.rollout_prompt_ids)))
        raise TargetError(
            f"{where}: prompt tokenization mismatch between generation and teacher-forced encoding "
            f"(first difference at prompt position {at}; {len(seg.rollout_prompt_ids)} rollout prompt ids, "
            f"{seg.prompt_len} in the row); encode the prompt once and pass the same ids to the rollout "
            "backend and the learner"
        )
    start = offset + seg.prompt_len
    if tuple(input_ids[start : start + train_len]) != seg.labels.ids:
        raise TargetError(f"{where}: row ids at [{start}, {start + train_len}) differ from the target's Y_train ids")


def target_segment(
    target: TrainTarget,
    *,
    prompt_len: int,
    encoded_len: int | None = None,
    rollout_prompt_ids: Sequence[int] | None = None,
) -> Segment:
    """The Segment of a BuildTarget result encoded after ``prompt_len`` prompt tokens.

    ``encoded_len`` defaults to prompt + Y_train (nothing after the EOS); a template that adds a
    suffix (a newline after ``<|im_end|>``) passes its real length.
    """
    labels = AssistantLabels(
        ids=target.y_train_ids,
        prefix_len=target.prefix_len,
        labels=target.labels,
        weights=target.ce_weights,
        coord_positions=target.coord_positions,
        coord_bins=target.coord_target_bins,
        coord_is_prefix=target.coord_is_prefix,
    )
    return Segment(
        prompt_len=prompt_len,
        encoded_len=prompt_len + target.train_len if encoded_len is None else encoded_len,
        labels=labels,
        rollout_prompt_ids=None if rollout_prompt_ids is None else tuple(rollout_prompt_ids),
        sample_id=target.sample_id,
    )
