"""Post-rollout packing of one step's segments into model batches (never applied to generation).

The pure selection and the carry buffer are ``coordexp.core.pack``; this module holds the tensors the
buffer refers to by key and turns each selected pack into a padding-free row (``learn.packed``).

- ``step`` mode (Stage-2 AB Channel-B step mode, and the multi-pack step): every segment of the step is
  buffered and drained into as many packs as it takes; the step learns all of them.
- ``carry`` mode (the legacy rollout-matching trainer): the step's segments arrive in micro-batches of
  ``per_device_train_batch_size``; each micro-step inserts its micro-batch and pops ONE pack, and what is
  not selected carries over to later steps. Segments still buffered when training ends are discarded
  (``training.packing_drop_last`` must be true) and counted.
- packing off: each micro-batch is a right-padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import torch

from coordexp.core.pack import Pack, PackBuffer, SegmentRef, drain, insert, pop_pack
from coordexp.learn.packed import Segment, TrainBatch, pack_segments, pad_segments

if TYPE_CHECKING:
    from coordexp.runtime import Runtime


@attrs.define
class PackingState:
    """The rank-local carry buffer and the segments it refers to."""

    enabled: bool
    mode: str  # "carry" | "step"
    cap: int  # tokens per row (global_max_length)
    capacity: int  # segments (training.packing_buffer)
    min_fill_ratio: float
    micro_batch: int  # per_device_train_batch_size
    pad_token_id: int
    buffer: PackBuffer | None = None
    store: dict[str, Segment] = attrs.Factory(dict)

    @classmethod
    def from_runtime(cls, rt: Runtime) -> PackingState:
        t = rt.config.training
        pad = rt.processor.tokenizer.pad_token_id
        return cls(
            enabled=t.packing,
            mode=rt.derived.packing_mode or "carry",
            cap=rt.config.global_max_length,
            capacity=t.packing_buffer,
            min_fill_ratio=t.packing_min_fill_ratio,
            micro_batch=t.per_device_train_batch_size,
            pad_token_id=pad if pad is not None else 0,
        )

    def _fresh_buffer(self, capacity: int) -> PackBuffer:
        return PackBuffer(capacity=capacity, cap=self.cap, min_fill_ratio=self.min_fill_ratio)

    @property
    def carried(self) -> int:
        return 0 if self.buffer is None else self.buffer.size


def _micro_batches(segments: Sequence[Segment], size: int) -> list[list[Segment]]:
    return [list(segments[i : i + size]) for i in range(0, len(segments), size)]


def _row(state: PackingState, pack: Pack, model: torch.nn.Module) -> TrainBatch:
    segs = [state.store.pop(ref.key) for ref in pack.segments]
    return pack_segments(segs, model=model, cap=state.cap)


def pack_step(
    state: PackingState, segments: Sequence[Segment], *, model: torch.nn.Module
) -> tuple[list[TrainBatch], list[Pack]]:
    """This step's batches and the core packs they were built from (none when packing is off)."""
    if not segments and state.carried == 0:
        return [], []
    if not state.enabled:
        return [pad_segments(mb, pad_token_id=state.pad_token_id) for mb in _micro_batches(segments, state.micro_batch)], []
    refs = [SegmentRef(s.key, s.length) for s in segments]
    for s in segments:
        state.store[s.key] = s
    if state.mode == "step":
        buffer = insert(state._fresh_buffer(max(state.capacity, len(refs))), refs)
        packs = drain(buffer)
    else:
        packs = []
        buffer = state.buffer or state._fresh_buffer(state.capacity)
        for mb in _micro_batches(refs, state.micro_batch) or [[]]:
            buffer = insert(buffer, mb)
            if buffer.size:
                pack, buffer = pop_pack(buffer)
                packs.append(pack)
        state.buffer = buffer
    return [_row(state, p, model) for p in packs], packs
