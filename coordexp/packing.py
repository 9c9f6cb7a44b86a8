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
    from coordexp.bind import PackingPlan
    from coordexp.runtime import Runtime


@attrs.define
class PackingState:
    """The rank-local carry buffer and the segments it refers to; ``plan`` None means packing is off."""

    plan: PackingPlan | None  # coordexp.bind: cap, buffer size, min fill, mode
    micro_batch: int  # per_device_train_batch_size
    pad_token_id: int
    buffer: PackBuffer | None = None
    store: dict[str, Segment] = attrs.Factory(dict)

    @classmethod
    def from_runtime(cls, rt: Runtime) -> PackingState:
        pad = rt.processor.tokenizer.pad_token_id
        return cls(plan=rt.bound.packing, micro_batch=rt.config.training.per_device_train_batch_size,
                   pad_token_id=pad if pad is not None else 0)

    @property
    def carried(self) -> int:
        return 0 if self.buffer is None else self.buffer.size


def _micro_batches(segments: Sequence[Segment], size: int) -> list[list[Segment]]:
    return [list(segments[i : i + size]) for i in range(0, len(segments), size)]


def _row(state: PackingState, pack: Pack, model: torch.nn.Module) -> TrainBatch:
    segs = [state.store.pop(ref.key) for ref in pack.segments]
    return pack_segments(segs, model=model, cap=state.plan.cap)


def pack_step(
    state: PackingState, segments: Sequence[Segment], *, model: torch.nn.Module
) -> tuple[list[TrainBatch], list[Pack]]:
    """This step's batches and the core packs they were built from (none when packing is off)."""
    if not segments and state.carried == 0:
        return [], []
    plan = state.plan
    if plan is None:
        return [pad_segments(mb, pad_token_id=state.pad_token_id) for mb in _micro_batches(segments, state.micro_batch)], []
    refs = [SegmentRef(s.key, s.length) for s in segments]
    for s in segments:
        state.store[s.key] = s
    packs, buffer = select_packs(plan, refs, buffer=state.buffer, micro_batch=state.micro_batch)
    if buffer is not None:
        state.buffer = buffer
    return [_row(state, p, model) for p in packs], packs


def select_packs(plan: PackingPlan, refs: Sequence[SegmentRef], *, buffer: PackBuffer | None,
                 micro_batch: int) -> tuple[list[Pack], PackBuffer | None]:
    """The packs of one step's segments (by key and length) and the carry buffer after them (pure).

    Offline replay selects the same packs from the same lengths without building a tensor row.
    """
    if plan.mode == "step":
        # the whole step at once: a buffer as large as the step, drained (nothing carries over)
        return list(drain(insert(attrs.evolve(plan.new_buffer(), capacity=max(plan.buffer_size, len(refs))), refs))), None
    packs = []
    buffer = buffer or plan.new_buffer()
    for mb in _micro_batches(refs, micro_batch) or [[]]:  # no new segment: still learn the carried ones
        buffer = insert(buffer, mb)
        if buffer.size:
            pack, buffer = pop_pack(buffer)
            packs.append(pack)
    return packs, buffer
