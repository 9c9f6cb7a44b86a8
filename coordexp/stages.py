"""The work of each state of the step machine (``coordexp.machine``) over one step's samples.

``StepWork`` holds one step's working memory (``StepState``) and does, per state, what the seed pipeline
says: roll out, parse, match, build the target, pack, learn, log. The pure stages call the core
transitions; the impure ones go through the runtime's backend, learner and sinks. A sample that a stage
cannot use is dropped there and counted under ``rollout/dropped_samples/<reason>``: the step goes on with
the rest, and the reason and the sample id are kept for the monitor dump.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs

from coordexp.backends.protocol import parallel_requests
from coordexp.core.match import MatchResult, match
from coordexp.core.parse import parse
from coordexp.core.parse_records import ParseResult
from coordexp.core.prefix_policy import PrefixView, apply_prefix_policy
from coordexp.core.schedule import Channel
from coordexp.core.target import build_target
from coordexp.core.target_pipeline import match_shapes
from coordexp.core.target_records import TargetSample, TrainTarget
from coordexp.errors import AppendError, DataError, SegmentTooLongError, TargetError, TokenizerError
from coordexp.pipeline import PipelineTimes, chunked, run_pipelined

if TYPE_CHECKING:
    from coordexp.backends.protocol import RolloutResult
    from coordexp.core.order import StepPlan
    from coordexp.core.pack import Pack
    from coordexp.data.records import Sample
    from coordexp.learn.encode import Encoding
    from coordexp.learn.learner import StepStats
    from coordexp.learn.packed import Segment, TrainBatch
    from coordexp.runtime import Runtime

CONFIG_READS = ("custom.extra.stage2_ab.channel_b.enable_pipeline",)
# Errors a single sample can raise in a stage: dropped and counted, never a crashed step.
SAMPLE_ERRORS = (DataError, TargetError, AppendError, TokenizerError)


@attrs.define
class Item:
    """One sample on its way through the step; stages fill the fields in order."""

    sample: Sample
    target_sample: TargetSample  # the GT in custom.object_ordering order for ``epoch``
    epoch: int = 0
    images: list[Any] | None = None  # decoded pixels (PIL), filled just before the prompt is encoded
    messages: list[dict[str, Any]] | None = None  # the chat turns of the prompt
    encoding: Encoding | None = None  # the prompt, as the rollout backend and the learner see it
    result: RolloutResult | None = None
    parsed: ParseResult | None = None
    view: PrefixView | None = None
    matched: MatchResult | None = None
    target: TrainTarget | None = None
    segment: Segment | None = None
    dropped: str | None = None  # reason, when a stage could not use the sample


@attrs.define
class StepState:
    """One optimizer step (or one evaluation pass)."""

    step: int
    channel: Channel
    is_eval: bool = False
    reuse: bool = False
    plan: StepPlan | None = None  # None for an evaluation pass
    items: list[Item] = attrs.Factory(list)
    packs: list[TrainBatch] = attrs.Factory(list)
    packs_core: list[Pack] = attrs.Factory(list)  # the selections behind ``packs`` (telemetry); empty unpacked
    stats: StepStats | None = None
    learn_skipped: bool = False  # DDP: another rank had no pack, so no rank learned this step
    drops: Counter[str] = attrs.Factory(Counter)
    timings: dict[str, float] = attrs.Factory(dict)
    metrics: dict[str, float] = attrs.Factory(dict)
    trace: list[str] = attrs.Factory(list)
    pipeline: PipelineTimes | None = None  # a pipelined Channel-B rollout (its generation ran on another thread)

    def live(self) -> list[Item]:
        return [it for it in self.items if it.dropped is None]

    def drop(self, item: Item, reason: str) -> None:
        item.dropped = reason
        self.drops[reason] += 1


class StepWork:
    """``coordexp.machine.StageWork`` for the runtime's backend, learner and transitions."""

    def __init__(self, runtime: Runtime, state: StepState, *, select: Callable[[StepState], None],
                 pack: Callable[[StepState], None], log: Callable[[StepState], None]) -> None:
        self.rt = runtime
        self.state = state
        self._select, self._pack, self._log = select, pack, log

    # guards
    def reuses_buffer(self) -> bool:
        return self.state.reuse

    def is_channel_a(self) -> bool:
        return self.state.channel is Channel.A

    def is_eval(self) -> bool:
        return self.state.is_eval

    def has_segments(self) -> bool:
        return bool(self.state.packs)

    # stages
    def schedule(self) -> None:
        self._select(self.state)

    def rollout(self) -> None:
        if self._pipelined():
            self._pipelined_rollout()
            return
        with self._timed("time/rollout_generate_s"):
            live = self._encode_prompts()
            requests = [self.rt.request(it) for it in live]
            results = self.rt.backend.generate(requests, seed=self.rt.rollout_seed(self.state)) if live else []
        for item, result in zip(live, results, strict=True):
            item.result = result

    def parse(self) -> None:
        self._parse([it for it in self.state.live() if it.parsed is None])  # pipelined: done chunk by chunk

    def match(self) -> None:
        self._match([it for it in self.state.live() if it.matched is None])

    def build_target(self) -> None:
        with self._timed("time/rollout_teacher_encode_s"):
            if self.state.channel is Channel.A:
                self._encode_prompts()
                for item in self.state.live():
                    self._guarded(item, "gt_target", self._gt_target)
                return
        self._targets([it for it in self.state.live() if it.target is None])

    def pack(self) -> None:
        with self._timed("time/post_rollout_pack_s"):
            self._pack(self.state)

    def learn(self) -> None:
        with self._timed("time/forward_s"):
            self.state.stats = self.rt.learner.step(self.state.packs, channel=self.state.channel)
        self.rt.backend.sync_weights(self.rt.model)  # the next rollouts see this step's weights

    def log(self) -> None:
        self._log(self.state)

    # helpers
    def _parse(self, items: list[Item]) -> None:
        rt = self.rt
        with self._timed("time/rollout_parse_match_s"):
            for item in items:
                item.parsed = parse(item.result.rollout, ctx=rt.ctx, layout=item.target_sample.layout)
                item.view = apply_prefix_policy(
                    item.parsed, ctx=rt.ctx, cfg=rt.bound.prefix_policy, layout=item.target_sample.layout,
                    bbox_only=rt.bound.target.bbox_only, sample_id=item.sample.sample_id,
                )

    def _match(self, items: list[Item]) -> None:
        with self._timed("time/rollout_parse_match_s"):
            for item in items:
                preds, gts = match_shapes(item.view, item.target_sample)
                item.matched = match(preds, gts, cfg=self.rt.bound.match)

    def _targets(self, items: list[Item]) -> None:
        with self._timed("time/rollout_teacher_encode_s"):
            for item in items:
                self._guarded(item, "target", self._rollout_target)

    def _pipelined(self) -> bool:
        """``channel_b.enable_pipeline`` on a training step (evaluation keeps one generate per batch)."""
        ab = self.rt.config.stage2_ab
        return (not self.state.is_eval and ab is not None and self.rt.bound.variant == "stage2_ab_training"
                and ab.channel_b.enable_pipeline)

    def _pipelined_rollout(self) -> None:
        """Generate chunk k+1 (producer thread) while chunk k is parsed, matched and targeted here.

        Chunks are as many samples as the backend works on at once (``decode_batch_size``, per server replica in
        server mode: ``coordexp.backends.protocol.parallel_requests``); chunk k samples with seed ``rollout_seed + k`` (greedy
        decoding ignores it, so greedy rollouts equal the unpipelined ones). Learning waits for the whole
        step: see ``coordexp.pipeline`` for why the exact step-token normalisation is kept.
        """
        rt, seed = self.rt, self.rt.rollout_seed(self.state)
        with self._timed("time/rollout_wait_s"):  # the main thread's own share of the rollout stage
            live = self._encode_prompts()

        def produce(index: int, chunk: list[Item]) -> list[RolloutResult]:
            return rt.backend.generate([rt.request(it) for it in chunk], seed=(seed + index) % 2**31)

        def consume(chunk: list[Item], results: list[RolloutResult]) -> None:
            for item, result in zip(chunk, results, strict=True):
                item.result = result
            self._parse(chunk)
            self._match(chunk)
            self._targets([it for it in chunk if it.dropped is None])

        size = parallel_requests(rt.backend, rt.bound.decoding.decode_batch_size)
        times = run_pipelined(chunked(live, size), produce=produce, consume=consume)
        self.state.timings["time/rollout_wait_s"] += times.wait_s
        self.state.pipeline = times

    def _rollout_target(self, item: Item) -> None:
        rt = self.rt
        item.target = build_target(item.view, item.matched, item.target_sample, ctx=rt.ctx, cfg=rt.bound.target)
        item.segment = rt.check_fits(rt.rollout_segment(item, key=self._key(item)))

    def _gt_target(self, item: Item) -> None:
        item.segment = self.rt.check_fits(self.rt.gt_segment(item, key=self._key(item)))

    def _key(self, item: Item) -> str:
        """Unique within a carry buffer even when one sample returns in a later epoch."""
        return f"{item.sample.sample_id}@{self.state.step}"

    def _encode_prompts(self) -> list[Item]:
        todo = [it for it in self.state.live() if it.encoding is None and not self.rt.cached_prompt(it)]
        self.rt.decode_images(todo)
        for item in todo:
            if item.encoding is None:
                self._guarded(item, "prompt", self.rt.encode_prompt)
        return self.state.live()

    def _guarded(self, item: Item, stage: str, work: Callable[[Item], Any]) -> None:
        try:
            work(item)
        except SAMPLE_ERRORS as exc:
            self.state.drop(item, f"{stage}_{type(exc).__name__}")
            self.rt.note_drop(self.state, item, stage, exc)
        except SegmentTooLongError as exc:  # longer than a packed row: this sample cannot be learned
            self.state.drop(item, f"{stage}_too_long")
            self.rt.note_drop(self.state, item, stage, exc)

    def _timed(self, key: str) -> _Timer:
        return _Timer(self.state.timings, key)


class _Timer:
    """Adds the wall time of a ``with`` block to ``timings[key]`` (stages may run more than once per key)."""

    def __init__(self, timings: dict[str, float], key: str) -> None:
        self.timings, self.key = timings, key

    def __enter__(self) -> None:
        self.start = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.timings[self.key] = self.timings.get(self.key, 0.0) + time.perf_counter() - self.start
