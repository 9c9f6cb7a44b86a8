"""Model batches for Qwen-VL: one padding-free packed row, or the padded batch it replaces.

A ``Segment`` is one sample's teacher-forced encoding plus its supervision (the tensor form of a
core ``TrainTarget``). ``pack_segments`` concatenates segments into ONE row (batch size 1, no
padding) laid out as reference rollout 8.4 describes:

- ``input_ids``, ``mm_token_type_ids`` concatenated; ``pixel_values`` and ``image_grid_thw``
  concatenated in segment order (the vision tower already attends per image, from the grid);
- ``position_ids`` [4, 1, L]: row 0 the text positions, restarting at 0 in every segment; rows 1..3
  the M-RoPE (t, h, w) positions, computed per segment with the model's own ``get_rope_index`` (so
  each segment sees exactly the positions it would see alone) and concatenated;
- ``TrainBatch.cu_seqlens``: the cumulative segment lengths ``[0, l0, l0 + l1, ..., L]`` (what a
  varlen attention kernel takes), so the boundaries are stated, not only implied by row 0; the
  learner passes them to the packed attention (``coordexp.learn.attention``) as ``cu_seq_lens_q/k``;
- at most ``cap`` tokens (the packing length) when a cap is given: the selection upstream already
  keeps a pack within it, and a longer row is refused rather than silently truncated or split;
- no attention mask. Under ``model.attn_impl: packed*`` each segment attends within itself and no
  mask is built. Under sdpa and eager, transformers (``masking_utils.find_packed_sequence_indices``,
  used by ``create_causal_mask`` when ``attention_mask`` and ``past_key_values`` are both None) starts
  a new sequence wherever the text position does not step by +1 and builds a dense L x L
  block-diagonal causal mask. Either way the forward must run with ``use_cache=False``: a cache
  disables that detection and the segments would attend to each other.

Because the first token of a segment is never supervised (it is prompt), no loss term reads a
logits row across a segment boundary; so a packed row gives exactly the losses and gradients of its
segments run one by one (tests/integration/test_packed_equivalence.py).

``pad_segments`` builds the classic right-padded batch of the same segments, for the benchmark and
for checking the packed path against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs
import torch

from coordexp.errors import LossError, PackingError
from coordexp.learn.losses import IGNORE_INDEX
from coordexp.learn.model import unwrap

MODEL_INPUT_KEYS = frozenset(
    {"input_ids", "mm_token_type_ids", "position_ids", "attention_mask", "pixel_values", "image_grid_thw"}
)
"""What ``TrainBatch.inputs`` may hold: keyword arguments of the Qwen-VL forward and nothing else.

Supervision and bookkeeping travel in the batch's own fields, never in ``inputs``: given ``labels`` the
model computes a second, per-batch mean loss of its own; ``past_key_values`` or a cache would make the
segments of a packed row attend to each other; ``logits_to_keep`` and ``use_cache`` are the learner's to
set. The legacy trainer stripped such helper keys before each forward; here a batch cannot carry them.
"""


def _check_segment(seg: Segment) -> None:
    n = seg.input_ids.numel()
    problems = [
        f"{name} has shape {tuple(t.shape)}, expected [{n}]"
        for name, t in (("mm_token_type_ids", seg.mm_token_type_ids), ("labels", seg.labels), ("ce_weights", seg.ce_weights))
        if t.shape != (n,)
    ]
    s = seg.coord_positions.numel()
    problems += [
        f"{name} has shape {tuple(t.shape)}, expected [{s}] like coord_positions"
        for name, t in (("coord_bins", seg.coord_bins), ("coord_is_prefix", seg.coord_is_prefix), ("coord_weights", seg.coord_weights))
        if t.shape != (s,)
    ]
    if n and int(seg.labels[0]) != IGNORE_INDEX:
        problems.append("the first token of a segment cannot carry a CE label (no logits row predicts it)")
    if s and bool(((seg.coord_positions < 1) | (seg.coord_positions >= n)).any()):
        problems.append(f"coord positions must lie in [1, {n})")
    problems += _box_problems(seg.box_slots, s)
    if (seg.pixel_values is None) != (seg.image_grid_thw is None):
        problems.append("pixel_values and image_grid_thw come together (both or neither)")
    if n == 0:
        problems.append("a segment cannot be empty")
    if problems:
        raise PackingError(f"invalid segment {seg.key!r}: " + "; ".join(problems))
    _check_weights(seg)


def _box_problems(box_slots: torch.Tensor, n_slots: int) -> list[str]:
    """A box is 4 indices into the segment's coord slots (``coordexp.core.box_slots``)."""
    if box_slots.dim() != 2 or box_slots.shape[1] != 4 or box_slots.dtype != torch.long:
        return [f"box_slots must be a long tensor [G, 4], got {tuple(box_slots.shape)} {box_slots.dtype}"]
    if box_slots.numel() and bool(((box_slots < 0) | (box_slots >= n_slots)).any()):
        return [f"box_slots must index the {n_slots} coord slots, got values in "
                f"[{int(box_slots.min())}, {int(box_slots.max())}]"]
    return []


def _no_boxes() -> torch.Tensor:
    return torch.zeros((0, 4), dtype=torch.long)


def _check_weights(seg: Segment) -> None:
    """Loss weights are finite and >= 0: a NaN would poison the step, and a negative weight could bring a
    step's weight sum to 0, which the learner's normalisation reads as "nothing to learn" (a zeroed loss)."""
    bad = [
        f"{name} has {n} value(s) that are negative or not finite"
        for name, w in (("ce_weights", seg.ce_weights), ("coord_weights", seg.coord_weights))
        if (n := int((~torch.isfinite(w.float()) | (w < 0)).sum()))
    ]
    if bad:
        raise LossError(
            f"segment {seg.key!r}: " + "; ".join(bad) + "; a loss weight must be a finite number >= 0 (CE "
            "weights come from the target settings, e.g. custom.extra.stage2_ab.desc_ce_weight and "
            "channel_b.drop_invalid_struct_ce_multiplier; coord weights are 1 per slot)"
        )


def _check_inputs(inputs: Mapping[str, torch.Tensor]) -> None:
    extra = sorted(set(inputs) - MODEL_INPUT_KEYS)
    if extra:
        raise PackingError(
            f"batch inputs hold {extra}, which are not model inputs (allowed: {sorted(MODEL_INPUT_KEYS)}); labels, "
            "weights and metadata belong in the TrainBatch fields, and the learner sets logits_to_keep and "
            "use_cache itself. Build batches with pack_segments or pad_segments"
        )


@attrs.frozen(eq=False)
class Segment:
    """One teacher-forced sample in tensor form (all 1-D tensors are per token of this segment)."""

    key: str  # sample / segment id, for error messages and the core PackBuffer
    input_ids: torch.Tensor  # [T] long
    mm_token_type_ids: torch.Tensor  # [T] int: 0 text, 1 image, 2 video
    pixel_values: torch.Tensor | None  # [patches, C*t*p*p] of this segment's images
    image_grid_thw: torch.Tensor | None  # [n_images, 3]
    labels: torch.Tensor  # [T] long; CE target at each position, IGNORE_INDEX = none
    ce_weights: torch.Tensor  # [T] float; weight of each CE label
    coord_positions: torch.Tensor  # [S] long; [1, T) token idx of coord slots
    coord_bins: torch.Tensor  # [S] long; target bin 0..999 of each slot
    coord_is_prefix: torch.Tensor  # [S] bool; matched rollout prefix (True) or appended tail
    coord_weights: torch.Tensor  # [S] float
    # [G, 4] long: the coord slots (indices into the [S] fields) of each box that gets the geometry losses
    box_slots: torch.Tensor = attrs.field(factory=_no_boxes)

    def __attrs_post_init__(self) -> None:
        _check_segment(self)

    @property
    def length(self) -> int:
        return self.input_ids.numel()


@attrs.frozen(eq=False)
class TrainBatch:
    """Model inputs plus the supervision aligned with them; a packed row has batch size 1."""

    inputs: Mapping[str, torch.Tensor]  # keyword arguments of the model's forward
    labels: torch.Tensor  # [B, L]
    ce_weights: torch.Tensor  # [B, L]
    coord_batch_index: torch.Tensor  # [S]
    coord_positions: torch.Tensor  # [S]; [1, L) token idx within the row
    coord_bins: torch.Tensor  # [S]
    coord_is_prefix: torch.Tensor  # [S]
    coord_weights: torch.Tensor  # [S]
    segment_lengths: tuple[int, ...]  # tokens, in concatenation (or row) order
    box_slots: torch.Tensor = attrs.field(factory=_no_boxes)  # [G, 4] indices into the [S] coord fields

    def __attrs_post_init__(self) -> None:
        _check_inputs(self.inputs)

    @property
    def n_segments(self) -> int:
        return len(self.segment_lengths)

    @property
    def cu_seqlens(self) -> tuple[int, ...]:
        """Cumulative segment lengths ``(0, l0, l0 + l1, ..., total)``: segment i is ``[cu[i], cu[i+1])``.

        For a packed row these are token offsets within the row; for a padded batch they index the
        segments' tokens laid end to end (the row each would have if packed).
        """
        bounds = [0]
        for n in self.segment_lengths:
            bounds.append(bounds[-1] + n)
        return tuple(bounds)

    def ce_mask(self) -> torch.Tensor:
        """[B, L] True where a CE label is read (positions >= 1 with a label)."""
        mask = self.labels != IGNORE_INDEX
        mask[..., 0] = False
        return mask

    def ce_weight(self) -> float:
        """Total CE weight of this batch: its share of the step denominator."""
        return float(self.ce_weights[self.ce_mask()].double().sum())

    def coord_weight(self) -> float:
        return float(self.coord_weights.double().sum())

    def box_weight(self) -> float:
        """Boxes with geometry losses: this batch's share of the step's geometry denominator."""
        return float(self.box_slots.shape[0])

    def to(self, device: torch.device) -> TrainBatch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        fields = {f.name: getattr(self, f.name) for f in attrs.fields(TrainBatch)}
        moved = {k: move(v) if isinstance(v, torch.Tensor) else v for k, v in fields.items()}
        moved["inputs"] = {k: move(v) for k, v in self.inputs.items()}
        return TrainBatch(**moved)


def segment_rope_positions(model: torch.nn.Module, seg: Segment) -> torch.Tensor:
    """The M-RoPE positions [3, T] this segment gets when it is run alone."""
    owner = unwrap(model).model  # Qwen3VLModel / Qwen2_5_VLModel own get_rope_index
    with torch.no_grad():
        pos, _ = owner.get_rope_index(
            seg.input_ids[None],
            mm_token_type_ids=seg.mm_token_type_ids[None],
            image_grid_thw=seg.image_grid_thw,
        )
    return pos[:, 0, :]


def _image_inputs(segments: Sequence[Segment]) -> dict[str, torch.Tensor]:
    with_images = [s for s in segments if s.pixel_values is not None]
    if not with_images:
        return {}
    return {
        "pixel_values": torch.cat([s.pixel_values for s in with_images]),
        "image_grid_thw": torch.cat([s.image_grid_thw for s in with_images]),
    }


def _coord_fields(segments: Sequence[Segment], offsets: Sequence[int], rows: Sequence[int]) -> dict:
    return {
        "coord_batch_index": torch.cat(
            [torch.full_like(s.coord_positions, r) for s, r in zip(segments, rows)]
        ),
        "coord_positions": torch.cat([s.coord_positions + o for s, o in zip(segments, offsets)]),
        "coord_bins": torch.cat([s.coord_bins for s in segments]),
        "coord_is_prefix": torch.cat([s.coord_is_prefix for s in segments]),
        "coord_weights": torch.cat([s.coord_weights for s in segments]),
        "box_slots": torch.cat([s.box_slots + n for s, n in zip(segments, _slot_offsets(segments))]),
    }


def _slot_offsets(segments: Sequence[Segment]) -> list[int]:
    """Where each segment's coord slots start in the batch's concatenated [S] fields."""
    out, total = [], 0
    for s in segments:
        out.append(total)
        total += s.coord_positions.numel()
    return out


def _require_segments(segments: Sequence[Segment]) -> None:
    if not segments:
        raise PackingError("cannot build a batch from zero segments")


def _check_cap(lengths: Sequence[int], cap: int | None) -> None:
    if cap is None:
        return
    if cap < 1:
        raise PackingError(f"packing cap must be >= 1 token, got {cap}")
    total = sum(lengths)
    if total > cap:
        raise PackingError(
            f"packed row length {total} exceeds the cap {cap} (global_max_length; "
            f"segment lengths {list(lengths)}); select fewer segments for this pack"
        )


def pack_segments(
    segments: Sequence[Segment], *, model: torch.nn.Module, cap: int | None = None
) -> TrainBatch:
    """One padding-free row [1, L] with per-segment positions (see the module docstring).

    ``cap`` (tokens, the packing length) bounds L; a longer row raises ``PackingError`` before any
    model call. ``None`` leaves the row unbounded, for callers that pack a known-small set.
    """
    _require_segments(segments)
    lengths = [s.length for s in segments]
    _check_cap(lengths, cap)
    offsets = [sum(lengths[:i]) for i in range(len(segments))]
    text = torch.cat([torch.arange(n, dtype=torch.long) for n in lengths])
    mrope = torch.cat([segment_rope_positions(model, s).to(torch.long) for s in segments], dim=1)
    inputs = {
        "input_ids": torch.cat([s.input_ids for s in segments])[None],
        "mm_token_type_ids": torch.cat([s.mm_token_type_ids for s in segments])[None],
        "position_ids": torch.cat([text[None], mrope])[:, None, :],
        **_image_inputs(segments),
    }
    return TrainBatch(
        inputs=inputs,
        labels=torch.cat([s.labels for s in segments])[None],
        ce_weights=torch.cat([s.ce_weights.float() for s in segments])[None],
        **_coord_fields(segments, offsets, [0] * len(segments)),
        segment_lengths=tuple(lengths),
    )


def _pad(rows: Sequence[torch.Tensor], width: int, value: float) -> torch.Tensor:
    out = torch.full((len(rows), width), value, dtype=rows[0].dtype)
    for i, r in enumerate(rows):
        out[i, : r.numel()] = r
    return out


def pad_segments(segments: Sequence[Segment], *, pad_token_id: int) -> TrainBatch:
    """The same segments as a right-padded batch [B, T_max] with an attention mask.

    Positions are left to the model (``get_rope_index`` with the attention mask), which is what a
    padded forward normally does.
    """
    _require_segments(segments)
    width = max(s.length for s in segments)
    inputs = {
        "input_ids": _pad([s.input_ids for s in segments], width, pad_token_id),
        "attention_mask": _pad([torch.ones_like(s.input_ids) for s in segments], width, 0),
        "mm_token_type_ids": _pad([s.mm_token_type_ids for s in segments], width, 0),
        **_image_inputs(segments),
    }
    return TrainBatch(
        inputs=inputs,
        labels=_pad([s.labels for s in segments], width, IGNORE_INDEX),
        ce_weights=_pad([s.ce_weights.float() for s in segments], width, 0.0),
        **_coord_fields(segments, [0] * len(segments), list(range(len(segments)))),
        segment_lengths=tuple(s.length for s in segments),
    )
