"""The training loop: one state-machine run per optimizer step, evaluation, checkpoints, resume, Ctrl-C.

One optimizer step, as the seed pipeline states it::

    Schedule     channel A or B for this step (core.schedule), its samples (core.order), or the cached window
    Rollout      the backend generates from the prompt ids (token in, token out)
    Parse        strict, token-aligned parse and the prefix policy
    Match        Hungarian matching of valid predictions to the GT
    BuildTarget  Y_train = prefix + SerializeAppend(FN) + EOS (Channel B) or the GT answer (Channel A)
    Pack         segments into padding-free rows: one per micro-step (carry) or all at once (step)
    Learn        one optimizer step over every pack, token-weighted over the whole step
    Log          step metrics into the logging window; monitor dumps and rollout records

The machine (``coordexp.machine``) decides which of these run; ``StepWork`` (``coordexp.stages``) does
each. The executor owns what lives across steps: the data position, the rollout-buffer window, the
carry buffer of packing, the logging window, the best metric, and the checkpoints.
"""

from __future__ import annotations

import logging
import signal
import time
from typing import TYPE_CHECKING, Any

import attrs

from coordexp.core.order import DataPosition, ReuseWindow, StepPlan, plan_step, rank_share, steps_per_epoch
from coordexp.core.schedule import Channel, RealizedRatio, channel_for_step
from coordexp.eval.detection import best_metric_key, is_better
from coordexp.machine import StepMachine
from coordexp.packing import PackingState, pack_step
from coordexp.runtime import Runtime
from coordexp.stability import StabilityControl
from coordexp.telemetry.step import PackLengthEma

if TYPE_CHECKING:
    from coordexp.checkpointing import Checkpointer
    from coordexp.step_log import StepLogger
from coordexp.stages import Item, StepState, StepWork

log = logging.getLogger("coordexp")
CONFIG_READS = (
    "training.seed",
    "training.dataloader_drop_last",
    "training.max_steps",
    "training.num_train_epochs",
    "training.eval_strategy",
    "training.eval_steps",
    "training.per_device_eval_batch_size",
    "training.metric_for_best_model",
    "training.greater_is_better",
    "custom.extra.stage2_ab.channel_b.enable_pipeline",
)


@attrs.define
class Progress:
    """What the loop carries from step to step (saved in trainer_state.json, except the runtime-only parts)."""

    step: int = 0  # optimizer steps done
    position: DataPosition = attrs.Factory(DataPosition)
    best_metric: float | None = None
    best_checkpoint: str | None = None
    first_eval: dict[str, float] | None = None
    last_eval: dict[str, float] | None = None
    pack_ema: PackLengthEma = attrs.Factory(PackLengthEma)  # packing/avg_segment_len_ema runs across steps
    window: ReuseWindow = attrs.Factory(ReuseWindow)  # runtime only: empty after a resume
    cached: StepState | None = None  # the window's E-step (packs + sample ids); runtime only


class Executor:
    """Runs the machine over the run's steps; the ``StepLogger`` gets every step and evaluation."""

    def __init__(self, rt: Runtime, *, checkpointer: Checkpointer, total_steps: int) -> None:
        self.rt = rt
        self.tele: StepLogger | None = None  # set by the caller once the start step is known (after a resume)
        self.ckpt = checkpointer
        self.total_steps = total_steps
        self.progress = Progress()
        self.packing = PackingState.from_runtime(rt)
        self.schedule = rt.bound.schedule  # the config's schedule, plus any stability-guard backoff
        self.realized = RealizedRatio()
        self.stability = StabilityControl(rt.config.stability_guard, variant=rt.bound.variant)
        self.stop_requested = False
        ab = rt.config.stage2_ab
        if self.schedule is not None and ab is not None and ab.channel_b.enable_pipeline:
            log.info("Channel-B pipeline on: chunks of %d rolled out on a producer thread while the previous chunk is "
                     "parsed, matched and targeted; learning waits for the whole step and keeps the exact step-token "
                     "normalisation (not the legacy per-pack segment-share weights)", rt.bound.decoding.decode_batch_size)

    # -- one step -----------------------------------------------------------------------------
    @property
    def m_steps(self) -> int:
        return self.rt.bound.rollout_buffer.reuse_steps

    def channel(self, step: int) -> Channel:
        return Channel.B if self.schedule is None else channel_for_step(step, schedule=self.schedule)

    def restore_schedule(self, saved: dict | None) -> None:
        """After a resume: the saved backoffs re-applied, and the realised ratio the straight run holds."""
        self.schedule = self.stability.restore(saved, self.rt.bound.schedule)
        if self.schedule is not None:
            self.realized = RealizedRatio.before(self.progress.step, schedule=self.schedule)

    def guard_step(self, state: StepState, metrics: dict[str, float]) -> dict[str, float]:
        """The stability guard on a finished step: its metrics; a stop or a backoff takes effect after it."""
        out, self.schedule = self.stability.on_step(state, metrics, self.schedule)
        if self.stability.stopped_by is not None:
            self.stop_requested = True
        return out

    def samples_for(self, channel: Channel) -> int:
        """Raw samples of a step: ``channel_b.rollouts_per_step`` on an AB Channel-B step (default: the
        effective batch, which is also what a Channel-A step takes), else the step's samples."""
        d = self.rt.derived
        if channel is Channel.B and self.schedule is not None and d.rollouts_per_step is not None:
            return d.rollouts_per_step
        return d.samples_per_step

    def plan(self, step: int) -> StepPlan:
        rt, t = self.rt, self.rt.config.training
        p = self.progress
        channel = self.channel(step)
        return plan_step(step, scheduled=channel, position=p.position, window=p.window, n=len(rt.train),
                         per_step=self.samples_for(channel), seed=rt.seed, drop_last=t.dataloader_drop_last,
                         m_steps=self.m_steps)

    def run_step(self, step: int) -> StepState:
        plan = self.plan(step)
        state = StepState(step=step, channel=plan.channel, reuse=plan.reuse, plan=plan)
        work = StepWork(self.rt, state, select=self._select, pack=self._pack, log=self._log)
        StepMachine(work, trace=state.trace).run_train_step()
        self.progress.position, self.progress.window = plan.position, plan.window
        if not plan.reuse:
            self.progress.cached = state if plan.window.window_step0 == step else None
        self.progress.step = step + 1
        return state

    def _select(self, state: StepState) -> None:
        """The step's items: this rank's share of the planned samples, or the cached window's items and packs."""
        rt = self.rt
        if state.reuse:
            cached = self.progress.cached
            state.items, state.packs, state.packs_core = list(cached.items), list(cached.packs), list(cached.packs_core)
            return
        share = rank_share(state.plan.indices, rank=rt.dist.rank, world=rt.dist.world)
        epoch = state.plan.position.epoch
        state.items = [Item(rt.train[i], rt.target_sample(rt.train[i], epoch=epoch), epoch) for i in share]

    def _pack(self, state: StepState) -> None:
        if state.reuse:
            return  # the cached packs, unchanged: an M-step never repacks nor touches the carry buffer
        segments = [it.segment for it in state.live() if it.segment is not None]
        state.packs, state.packs_core = pack_step(self.packing, segments, model=self.rt.model)
        if self.rt.dist.min_over_ranks(len(state.packs)) == 0 and state.packs:
            # under DDP every rank must join the step's all-reduces: a rank left without a pack (all its
            # samples dropped) makes the whole step skip learning, counted, instead of hanging the others
            state.learn_skipped = True
            state.packs = []

    def _log(self, state: StepState) -> None:
        if state.is_eval:
            return
        if state.channel is not None:
            self.realized = self.realized.record(state.step, state.channel)
        self.tele.step_done(state, self)

    def epoch_progress(self) -> float:
        """Fractional epoch reached by the data position (``train/epoch``)."""
        pos = self.progress.position
        return pos.epoch + pos.offset / max(1, len(self.rt.train))

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict[str, float]:
        """Production-style evaluation: rollout -> parse -> match on this rank's share of the eval set, in
        batches of ``per_device_eval_batch_size`` (default ``decode_batch_size``; the backend still decodes
        ``decode_batch_size`` at a time), metrics summed over batches and ranks. Never reuses the buffer."""
        rt = self.rt
        size = rt.config.training.per_device_eval_batch_size or rt.bound.decoding.decode_batch_size
        share = [rt.val[i] for i in rank_share(tuple(range(len(rt.val))), rank=rt.dist.rank, world=rt.dist.world)]
        started = time.perf_counter()
        batches = []
        for start in range(0, len(share), size):
            state = StepState(step=step, channel=Channel.B, is_eval=True)
            state.items = [Item(s, rt.target_sample(s, epoch=0)) for s in share[start : start + size]]
            work = StepWork(rt, state, select=lambda s: None, pack=lambda s: None, log=lambda s: None)
            StepMachine(work, trace=state.trace).run_eval()
            batches.append(state)
        metrics = self.tele.eval_done(batches, self, step=step, seconds=time.perf_counter() - started)
        if self.progress.first_eval is None:
            self.progress.first_eval = metrics
        self.progress.last_eval = metrics
        return metrics

    # -- the loop -----------------------------------------------------------------------------
    def train(self) -> Progress:
        if self._eval_enabled():
            best_metric_key(self.rt.config.training.metric_for_best_model)  # a bad name fails before step 0
        previous = signal.signal(signal.SIGINT, self._on_sigint) if self.rt.dist.is_main else None
        try:
            if self._eval_enabled() and self.progress.step == 0:
                self.evaluate(0)
            while self.progress.step < self.total_steps and not self.stop_requested:
                step = self.progress.step
                self.run_step(step)
                done = step + 1
                self.tele.maybe_flush(done, final=done == self.total_steps)
                if self._eval_due(done):
                    metrics = self.evaluate(done)
                    self._track_best(done, metrics)
                if self.ckpt.due(self, done, final=done == self.total_steps):
                    self.ckpt.save(self, done)
        except KeyboardInterrupt:
            log.warning("interrupted again: the current step is abandoned")
            self.stop_requested = True
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
            self.tele.maybe_flush(self.progress.step, final=True)
        if self.stop_requested:
            why = "the stability guard" if self.stability.stopped_by is not None else "Ctrl-C"
            log.warning("stopped at step %d by %s; saving a checkpoint", self.progress.step, why)
            self.ckpt.save(self, self.progress.step)
        self.tele.close()
        return self.progress

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.stop_requested:
            raise KeyboardInterrupt
        self.stop_requested = True
        log.warning("Ctrl-C: finishing the current step, then saving a checkpoint (Ctrl-C again to abandon it)")

    def _eval_enabled(self) -> bool:
        t = self.rt.config.training
        return bool(self.rt.val) and t.eval_strategy != "no"

    def _eval_due(self, done: int) -> bool:
        t = self.rt.config.training
        if not self._eval_enabled():
            return False
        if done == self.total_steps:
            return True
        if t.eval_strategy == "steps":
            return done % t.eval_steps == 0
        per_epoch = steps_per_epoch(len(self.rt.train), per_step=self.rt.derived.samples_per_step,
                                    drop_last=t.dataloader_drop_last)
        return done % max(1, per_epoch * self.m_steps) == 0

    def _track_best(self, step: int, metrics: dict[str, float]) -> None:
        t = self.rt.config.training
        value = metrics.get(best_metric_key(t.metric_for_best_model))
        if value is not None and is_better(t.metric_for_best_model, value, self.progress.best_metric,
                                           t.greater_is_better):
            self.progress.best_metric = value
            self.ckpt.on_new_best(self, step)

def total_steps(rt: Runtime) -> int:
    """``training.max_steps``, else ``num_train_epochs`` passes (each window counted m_steps times)."""
    t = rt.config.training
    if t.max_steps is not None:
        return t.max_steps
    per_epoch = steps_per_epoch(len(rt.train), per_step=rt.derived.samples_per_step, drop_last=t.dataloader_drop_last)
    return max(1, round(per_epoch * t.num_train_epochs * rt.bound.rollout_buffer.reuse_steps))

