"""Channel-B pipelining (``stage2_ab.channel_b.enable_pipeline``): a bounded producer / consumer within a step.

A producer thread rolls out the step's samples in chunks of as many requests as the backend runs at once
(``coordexp.backends.protocol.parallel_requests``) through the ``RolloutBackend`` protocol (any backend) and hands each chunk over a ``queue.Queue(maxsize=1)``; the
main thread parses, matches and builds the targets of chunk k while the producer generates chunk k+1.
Packing and learning then run as in the unpipelined step, on all of the step's segments.

Why learning waits for the whole step: the learner normalises by the step's total token weights, which
it needs before the first backward (``coordexp.learn.learner``); a pack learned while later chunks are
still generating could only be weighted by its segment share of the step (the legacy pipeline, reference
AB 3.2.5-7: a mean of per-pack means, and weights below 1 whenever a sample drops). coordexp keeps the
exact step-token mean, so a pipelined step trains exactly like an unpipelined one on the same rollouts;
what overlaps generation is the CPU-side parse / match / target work. With a backend on other devices
(the vLLM server) that work is hidden entirely; with one sharing the learner's device (hf, vLLM
colocate) generation and the main thread share the device, which the config warns about.

Never a hang: the producer always puts the sentinel last (a failure travels as a message before it);
the consumer loop has no timeout but ends on the sentinel, and when its own work fails it stops the
producer and drains the queue to the sentinel before re-raising. Either side's exception is re-raised in
the main thread after the producer thread has been joined.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import attrs

Chunk = TypeVar("Chunk")
Result = TypeVar("Result")
_SENTINEL = object()


@attrs.frozen
class _Failure:
    error: BaseException


@attrs.frozen
class PipelineTimes:
    """What one pipelined pass cost; ``overlap_s`` is the generation the consumer did not wait for."""

    generate_s: float  # producer time inside ``produce``
    wait_s: float  # consumer time blocked on the queue
    chunks: int

    @property
    def overlap_s(self) -> float:
        return max(0.0, self.generate_s - self.wait_s)

    @property
    def overlap_ratio(self) -> float:
        """Share of the generation hidden behind the consumer's work (0 = none, 1 = all)."""
        return self.overlap_s / self.generate_s if self.generate_s > 0 else 0.0

    def metrics(self) -> dict[str, float]:
        """The producer's side; the waits are the main thread's wall time (``time/rollout_wait_s``), so
        ``time/step_s`` stays a sum of main-thread times and generation is not counted twice."""
        return {"time/rollout_generate_s": self.generate_s, "time/pipeline_overlap_s": self.overlap_s,
                "pipeline/chunks": float(self.chunks)}


class _Producer(threading.Thread, Generic[Chunk, Result]):
    def __init__(self, chunks: Sequence[Chunk], produce: Callable[[int, Chunk], Result], out: queue.Queue,
                 stop: threading.Event) -> None:
        super().__init__(name="coordexp-rollout-producer", daemon=True)
        self.chunks, self.produce, self.out, self.stop = chunks, produce, out, stop
        self.seconds = 0.0

    def run(self) -> None:
        try:
            for index, chunk in enumerate(self.chunks):
                if self.stop.is_set():
                    break
                started = time.perf_counter()
                result = self.produce(index, chunk)
                self.seconds += time.perf_counter() - started
                self.out.put((chunk, result))
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
            self.out.put(_Failure(exc))
        finally:
            self.out.put(_SENTINEL)


def run_pipelined(chunks: Sequence[Chunk], *, produce: Callable[[int, Chunk], Result],
                  consume: Callable[[Chunk, Result], None]) -> PipelineTimes:
    """``consume(chunk, produce(i, chunk))`` for every chunk in order, producing chunk i+1 meanwhile."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    stop = threading.Event()
    producer = _Producer(chunks, produce, handoff, stop)
    producer.start()
    error: BaseException | None = None
    waited, consumed = 0.0, 0
    while True:
        started = time.perf_counter()
        message = handoff.get()
        waited += time.perf_counter() - started
        if message is _SENTINEL:
            break
        if isinstance(message, _Failure):
            error = error or message.error
            continue
        if error is not None:
            continue  # draining to the sentinel after a failure
        try:
            consume(*message)
            consumed += 1
        except BaseException as exc:  # noqa: BLE001 - re-raised below, once the producer has stopped
            error = exc
            stop.set()
    producer.join()
    if error is not None:
        raise error
    return PipelineTimes(generate_s=producer.seconds, wait_s=waited, chunks=consumed)


def chunked(items: Sequence[Chunk], size: int) -> list[list[Chunk]]:
    return [list(items[i : i + size]) for i in range(0, len(items), max(1, size))]
