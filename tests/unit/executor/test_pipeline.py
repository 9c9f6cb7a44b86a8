"""The Channel-B producer / consumer: order, bounded lead, failures on either side re-raised, never a hang."""

from __future__ import annotations

import threading

import pytest

from coordexp.pipeline import PipelineTimes, chunked, run_pipelined


def test_every_chunk_is_consumed_in_order_with_its_result():
    seen = []
    times = run_pipelined(chunked(list(range(7)), 3), produce=lambda i, c: (i, [x * 10 for x in c]),
                          consume=lambda c, r: seen.append((c, r)))
    assert seen == [([0, 1, 2], (0, [0, 10, 20])), ([3, 4, 5], (1, [30, 40, 50])), ([6], (2, [60]))]
    assert times.chunks == 3


def test_the_producer_runs_at_most_one_chunk_ahead_of_the_queue():
    consumed, leads = [0], []

    def produce(i, chunk):
        leads.append(i - consumed[0])
        return chunk

    def consume(chunk, result):
        consumed[0] += 1

    run_pipelined(chunked(list(range(20)), 1), produce=produce, consume=consume)
    # chunk i may be generated while i-1 waits in the queue (maxsize 1) and i-2 is being consumed
    assert max(leads) <= 2


def test_a_producer_failure_is_reraised_in_the_main_thread_after_the_chunks_before_it():
    seen = []

    def produce(i, chunk):
        if i == 2:
            raise RuntimeError("backend died")
        return chunk

    with pytest.raises(RuntimeError, match="backend died"):
        run_pipelined(chunked(list(range(5)), 1), produce=produce, consume=lambda c, r: seen.append(c))
    assert seen == [[0], [1]]
    assert all(t.name != "coordexp-rollout-producer" for t in threading.enumerate())


def test_a_consumer_failure_stops_the_producer_and_is_reraised():
    produced = []

    def produce(i, chunk):
        produced.append(i)
        return chunk

    def consume(chunk, result):
        raise ValueError(f"bad chunk {chunk}")

    with pytest.raises(ValueError, match=r"bad chunk \[0\]"):
        run_pipelined(chunked(list(range(50)), 1), produce=produce, consume=consume)
    assert len(produced) < 50  # stopped early, and the queue was drained: no thread left blocked
    assert all(t.name != "coordexp-rollout-producer" for t in threading.enumerate())


def test_no_chunks_is_an_empty_pass():
    assert run_pipelined([], produce=lambda i, c: c, consume=lambda c, r: None).chunks == 0


def test_overlap_is_the_generation_the_consumer_did_not_wait_for():
    t = PipelineTimes(generate_s=4.0, wait_s=1.0, chunks=4)
    assert (t.overlap_s, t.overlap_ratio) == (3.0, 0.75)
    assert PipelineTimes(generate_s=1.0, wait_s=2.0, chunks=1).overlap_s == 0.0
    assert PipelineTimes(0.0, 0.0, 0).overlap_ratio == 0.0
