"""Which raw samples each optimizer step trains on: epochs, shuffling by seed, drop-last, reuse windows.

The order is a pure function of (dataset size, seed, step budget, position), never of a stateful sampler,
so a resumed run that restores ``DataPosition`` sees exactly the samples the uninterrupted run would have
seen, and every rank derives the same global order without a broadcast.

- Epoch ``e`` visits ``permutation(n, seed, e)``: a seeded shuffle (``random.Random(seed * 1_000_003 + e)``),
  or ``range(n)`` with ``shuffle=False``.
- A step takes ``per_step`` indices. Where an epoch has fewer left, ``drop_last`` skips the rest and starts
  the next epoch (``DataPosition.dropped`` counts them: a metric, never silent); without it the step takes
  the short remainder (the last step of the epoch is smaller).
- Rollout-buffer reuse (``m_steps > 1``): the step's samples form a window that the next ``m_steps - 1``
  optimizer steps reuse (``ReuseWindow``). The data position advances only on the window's first step, so
  no sample is skipped. A short (final partial) window is used once. After a resume the buffer starts
  empty, so the first step always opens a new window.
"""

from __future__ import annotations

import random

import attrs

from coordexp.core.schedule import Channel
from coordexp.errors import DataError

_SEED_STRIDE = 1_000_003


@attrs.frozen
class DataPosition:
    """Where the next step's samples start: epoch and offset into that epoch's permutation."""

    epoch: int = 0
    offset: int = 0
    dropped: int = 0  # samples skipped at epoch ends by drop_last, over the whole run


def permutation(n: int, *, seed: int, epoch: int, shuffle: bool = True) -> tuple[int, ...]:
    order = list(range(n))
    if shuffle:
        random.Random(seed * _SEED_STRIDE + epoch).shuffle(order)
    return tuple(order)


def take_step(
    position: DataPosition, *, n: int, per_step: int, seed: int, drop_last: bool, shuffle: bool = True
) -> tuple[tuple[int, ...], DataPosition]:
    """The dataset indices of one optimizer step and the position after it."""
    if n <= 0:
        raise DataError("the training set is empty: nothing to train on (check custom.train_jsonl / train_sample_limit)")
    if per_step <= 0:
        raise DataError(f"an optimizer step must take at least one sample, got {per_step}")
    if drop_last and per_step > n:
        raise DataError(
            f"one optimizer step needs {per_step} samples but the training set has {n}; with "
            "training.dataloader_drop_last every step would be dropped. Fix: lower training.effective_batch_size "
            "or set dataloader_drop_last: false"
        )
    epoch, offset, dropped = position.epoch, position.offset, position.dropped
    left = n - offset
    if left <= 0 or (drop_last and left < per_step):
        dropped += max(0, left)
        epoch, offset = epoch + 1, 0
    order = permutation(n, seed=seed, epoch=epoch, shuffle=shuffle)
    picked = order[offset : offset + per_step]
    return picked, DataPosition(epoch, offset + len(picked), dropped)


def steps_per_epoch(n: int, *, per_step: int, drop_last: bool) -> int:
    """Optimizer steps that one pass over ``n`` samples gives (before rollout-buffer reuse)."""
    return n // per_step if drop_last else -(-n // per_step)


@attrs.frozen
class ReuseWindow:
    """The rollout buffer's bookkeeping: which step filled the window, with which samples, how often used."""

    window_step0: int | None = None  # optimizer step of the E-step that filled the window; None = empty
    indices: tuple[int, ...] = ()  # the window's dataset indices (all ranks)
    uses: int = 0  # steps that have used the window so far (the E-step included)
    partial: bool = False  # a short window is used once

    def is_reuse(self, *, m_steps: int) -> bool:
        """Whether the next step is an M-step (learns the cached window without rolling out)."""
        return self.window_step0 is not None and not self.partial and self.uses < m_steps


@attrs.frozen
class StepPlan:
    """What one optimizer step trains on; ``window`` and ``position`` are the state after it."""

    step: int
    channel: Channel
    reuse: bool  # an M-step: the cached window's targets, no rollout
    indices: tuple[int, ...]  # dataset indices of the step (all ranks), in order
    partial: bool  # fewer samples than a full step (end of data without drop_last)
    completed: int  # steps that used the window before this one (0 on an E-step)
    window: ReuseWindow
    position: DataPosition

    def partial_window_warning(self) -> str | None:
        """What the executor warns when a reuse window comes up short (it is then used once)."""
        if not (self.partial and not self.reuse):
            return None
        return (f"optimizer step {self.step}: the data ran out mid-window ({len(self.indices)} samples); this "
                "short window is learned once, not reused. Set training.dataloader_drop_last: true (or "
                "rollout_buffer.m_steps: 1) to keep every window whole")

    def buffer_metrics(self) -> dict[str, float]:
        """``rollout/buffer_*``: E-step or M-step, the step that filled the window, steps already learned from it."""
        step0 = self.window.window_step0
        return {
            "rollout/buffer_reuse": float(self.reuse),
            "rollout/buffer_window_step0": float(self.step if step0 is None else step0),
            "rollout/buffer_completed_steps": float(self.completed),
        }


def plan_step(
    step: int,
    *,
    scheduled: Channel,
    position: DataPosition,
    window: ReuseWindow,
    n: int,
    per_step: int,
    seed: int,
    drop_last: bool,
    m_steps: int = 1,
    shuffle: bool = True,
) -> StepPlan:
    """The next step: an M-step while the window has uses left (always Channel B), else fresh samples.

    Only a fresh Channel-B step opens a window (Channel A never rolls out, so there is nothing to reuse).
    """
    if window.is_reuse(m_steps=m_steps):
        used = attrs.evolve(window, uses=window.uses + 1)
        return StepPlan(step, Channel.B, True, window.indices, False, window.uses, used, position)
    indices, after = take_step(position, n=n, per_step=per_step, seed=seed, drop_last=drop_last, shuffle=shuffle)
    partial = len(indices) < per_step
    opened = ReuseWindow(step, indices, 1, partial) if scheduled is Channel.B and m_steps > 1 else ReuseWindow()
    return StepPlan(step, scheduled, False, indices, partial, 0, opened, after)


def rank_share(indices: tuple[int, ...], *, rank: int, world: int) -> tuple[int, ...]:
    """One rank's samples of a step: every ``world``-th index from ``rank``, so shares are disjoint, cover the
    step, and differ in size by at most one (only on a partial last step)."""
    if not 0 <= rank < world:
        raise DataError(f"rank {rank} outside a world of {world} processes")
    return indices[rank::world]
