"""Data order per optimizer step: epochs, seeded shuffles, drop-last, and rollout-buffer windows."""

from __future__ import annotations

import pytest

from coordexp.core.order import DataPosition, ReuseWindow, plan_step, steps_per_epoch, take_step
from coordexp.core.schedule import Channel
from coordexp.errors import DataError


def _run(steps, *, n, per_step, drop_last, m_steps=1, seed=0, scheduled=lambda s: Channel.B):
    pos, win, plans = DataPosition(), ReuseWindow(), []
    for s in range(steps):
        p = plan_step(s, scheduled=scheduled(s), position=pos, window=win, n=n, per_step=per_step, seed=seed,
                      drop_last=drop_last, m_steps=m_steps)
        plans.append(p)
        pos, win = p.position, p.window
    return plans


def test_each_epoch_visits_every_sample_once_in_a_seeded_order():
    plans = _run(4, n=8, per_step=4, drop_last=True)
    first, second = plans[0].indices + plans[1].indices, plans[2].indices + plans[3].indices
    assert sorted(first) == sorted(second) == list(range(8))
    assert first != second  # a new shuffle per epoch
    assert [p.indices for p in _run(4, n=8, per_step=4, drop_last=True)] == [p.indices for p in plans]
    assert [p.indices for p in _run(4, n=8, per_step=4, drop_last=True, seed=1)] != [p.indices for p in plans]


def test_drop_last_skips_the_short_remainder_and_counts_it():
    plans = _run(3, n=10, per_step=4, drop_last=True)
    assert [len(p.indices) for p in plans] == [4, 4, 4]
    assert plans[2].position.epoch == 1 and plans[2].position.dropped == 2
    kept = _run(3, n=10, per_step=4, drop_last=False)
    assert [len(p.indices) for p in kept] == [4, 4, 2] and kept[2].partial


def test_resume_from_a_saved_position_continues_the_same_order():
    straight = _run(5, n=7, per_step=3, drop_last=False)
    cut = straight[1].position
    idx, _ = take_step(cut, n=7, per_step=3, seed=0, drop_last=False)
    assert idx == straight[2].indices


def test_reuse_window_repeats_without_skipping_and_a_partial_window_runs_once():
    plans = _run(7, n=7, per_step=2, drop_last=False, m_steps=2)
    assert [p.reuse for p in plans] == [False, True, False, True, False, True, False]
    assert plans[1].indices == plans[0].indices and plans[1].completed == 1 and plans[1].window.window_step0 == 0
    assert plans[6].partial and plans[6].window.partial and not plans[6].window.is_reuse(m_steps=2)
    assert sorted(i for p in plans if not p.reuse for i in p.indices) == list(range(7))


def test_reuse_forces_channel_b_and_channel_a_opens_no_window():
    sched = {0: Channel.B, 1: Channel.A, 2: Channel.A, 3: Channel.B}
    plans = _run(4, n=20, per_step=2, drop_last=True, m_steps=2, scheduled=lambda s: sched[s])
    assert [(p.channel, p.reuse) for p in plans] == [
        (Channel.B, False), (Channel.B, True), (Channel.A, False), (Channel.B, False)]


def test_bad_budgets_are_clear_errors():
    with pytest.raises(DataError, match="train_jsonl"):
        take_step(DataPosition(), n=0, per_step=1, seed=0, drop_last=True)
    with pytest.raises(DataError, match="dataloader_drop_last"):
        take_step(DataPosition(), n=3, per_step=4, seed=0, drop_last=True)
    assert steps_per_epoch(10, per_step=4, drop_last=True) == 2
    assert steps_per_epoch(10, per_step=4, drop_last=False) == 3
