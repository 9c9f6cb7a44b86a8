"""Recorded rollouts through the training machine, offline: Schedule -> Rollout(recorded) -> Parse -> Match ->
BuildTarget -> Pack, no Learn.

Why the training code itself: the stages are ``coordexp.stages.StepWork`` (the same parse, prefix policy,
match, target and segment-fit calls as training), the backend is ``recorded`` and the machine runs its
``replay`` trigger, so a replayed step can only differ from the recorded one where the inputs differ. No
model is built: ``ReplayRuntime`` answers the runtime's per-sample questions from the recording (prompt
ids) and sizes a segment from its lengths instead of building tensors. Evaluation records replay through
the machine's ``evaluate`` path, as training evaluated them.

Metrics: per step the same ``rollout_metrics`` training logs, folded by ``MetricWindow`` over the
config's logging cadence (``logged``: one record per training log line) and over the whole recording
(``metrics``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import attrs
import torch
from tqdm.auto import tqdm

from coordexp.backends.recorded import RecordedBackend
from coordexp.bind import bind
from coordexp.config import Config, derive
from coordexp.core.digest import targets_digest
from coordexp.core.order import DataPosition, ReuseWindow, plan_step
from coordexp.core.pack import SegmentRef
from coordexp.core.schedule import Channel, channel_for_step
from coordexp.core.tokens import TokenContext
from coordexp.data.dataset import load_samples
from coordexp.data.records import Sample
from coordexp.errors import DataError
from coordexp.eval.detection import SampleOutcome, eval_metrics, rollout_metrics
from coordexp.machine import StepMachine
from coordexp.packing import select_packs
from coordexp.replay.formats import ReplayInput, ReplaySample
from coordexp.runtime import Distributed, Runtime
from coordexp.stages import Item, StepState, StepWork
from coordexp.step_log import outcome, rollout_config_metrics
from coordexp.telemetry.keymodel import Mode
from coordexp.telemetry.recording import RolloutRecord
from coordexp.telemetry.step import PackLengthEma, pack_metrics
from coordexp.telemetry.window import MetricWindow, merge_metrics

CONFIG_READS = ("training.logging_steps", "training.logging_first_step", "custom.train_jsonl", "custom.val_jsonl")
_HASH = "0" * 16  # replayed records are looked up by sample and step; the config hash is not checked here


@attrs.frozen
class SegmentSize:
    """What packing needs of a segment: its key and token length (prompt + Y_train), no tensors."""

    key: str
    length: int


@attrs.define
class ReplayRuntime(Runtime):
    """The runtime without a model: prompts come from the recording, segments are sized, never built."""

    prompts_by_id: dict[str, tuple[int, ...]] = attrs.Factory(dict)

    def decode_images(self, items: list[Item]) -> None:
        """Nothing to decode: the prompt ids are recorded."""

    def cached_prompt(self, item: Item) -> bool:
        return True

    def request(self, item: Item):
        from coordexp.backends.protocol import RolloutRequest

        return RolloutRequest(sample_id=item.sample.sample_id, prompt_ids=self.prompts_by_id.get(item.sample.sample_id, ()),
                              encoding=None, images=())

    def rollout_segment(self, item: Item, *, key: str) -> SegmentSize:
        return SegmentSize(key, len(item.result.rollout.prompt_ids or ()) + item.target.train_len)


@attrs.frozen
class ReplayedSample:
    """One replayed rollout: its input row, the stage records and the metrics' view of it."""

    sample: ReplaySample
    item: Item
    outcome: SampleOutcome | None  # None when a stage dropped the sample before matching


@attrs.frozen
class ReplayRun:
    """Everything the diagnosis and the report read."""

    input: ReplayInput
    samples: tuple[ReplayedSample, ...]
    metrics: dict[str, float]  # rollout/* (train windows) and eval_rollout/* over the whole recording
    logged: tuple[dict[str, Any], ...]  # one record per training log line (mode, step, metrics)
    step_digests: dict[int, str]  # targets_sha per replayed train step
    traces: tuple[tuple[int, str, tuple[str, ...]], ...]  # (step, mode, states visited)


def build_replay_runtime(config: Config, ctx: TokenContext, backend: RecordedBackend) -> ReplayRuntime:
    return ReplayRuntime(config=config, derived=derive(config), bound=bind(config), loaded=None, ctx=ctx,
                         prompts=None, train=[], val=[], dist=Distributed(), device=torch.device("cpu"),
                         backend=backend)


def _records(samples: Sequence[ReplaySample]) -> list[RolloutRecord]:
    return [RolloutRecord(s.sample_id, s.step, s.prompt_ids, s.completion_ids, s.finish_reason, s.stop_rule, _HASH,
                          s.mode) for s in samples]


def _dataset_samples(rt: ReplayRuntime, inp: ReplayInput) -> dict[str, dict[str, Sample]]:
    """The GT of a coordexp recording: the config's own data (by sample id), per mode."""
    custom = rt.config.custom
    out: dict[str, dict[str, Sample]] = {"train": {}, "eval": {}}
    modes = {s.mode for s in inp.samples if s.gt is None}
    if "train" in modes:
        out["train"] = {s.sample_id: s for s in load_samples(custom.train_jsonl, image_root=custom.image_root,
                                                              limit=custom.train_sample_limit, key="custom.train_jsonl")}
    if "eval" in modes and custom.val_jsonl:
        out["eval"] = {s.sample_id: s for s in load_samples(custom.val_jsonl, image_root=custom.image_root,
                                                             limit=custom.val_sample_limit, key="custom.val_jsonl")}
    return out


def _sample_of(row: ReplaySample, data: dict[str, dict[str, Sample]]) -> Sample:
    if row.gt is not None:
        images = (row.image,) if row.image else ()
        return Sample(row.sample_id, images, row.width, row.height, row.gt, row.source)
    found = data[row.mode].get(row.sample_id)
    if found is None:
        key = "custom.train_jsonl" if row.mode == "train" else "custom.val_jsonl"
        raise DataError(f"{row.source}: sample {row.sample_id!r} is not in the config's {key}; replay with the "
                        "recording run's config (its run folder's config.yaml)")
    return found


class _Epochs:
    """The data epoch of each recorded step, from the run's own step plan (random object order needs it)."""

    def __init__(self, rt: ReplayRuntime, n_train: int) -> None:
        self.rt, self.n = rt, n_train
        self.position, self.window, self.next_step = DataPosition(), ReuseWindow(), 0
        self.random = rt.config.custom.object_ordering == "random" and n_train > 0

    def at(self, step: int) -> int:
        if not self.random:
            return 0
        rt, t = self.rt, self.rt.config.training
        plan = None
        while self.next_step <= step:
            s = self.next_step
            channel = Channel.B if rt.bound.schedule is None else channel_for_step(s, schedule=rt.bound.schedule)
            plan = plan_step(s, scheduled=channel, position=self.position, window=self.window, n=self.n,
                             per_step=rt.derived.samples_per_step, seed=rt.seed, drop_last=t.dataloader_drop_last,
                             m_steps=rt.bound.rollout_buffer.reuse_steps)
            self.position, self.window, self.next_step = plan.position, plan.window, s + 1
        return self.position.epoch


class _Packer:
    """The step's packs from segment lengths (``coordexp.packing.select_packs``), carry buffer kept."""

    def __init__(self, rt: ReplayRuntime) -> None:
        self.rt, self.buffer, self.ema = rt, None, PackLengthEma()
        self.metrics: dict[str, float] = {}

    def __call__(self, state: StepState) -> None:
        plan = self.rt.bound.packing
        refs = [SegmentRef(it.segment.key, it.segment.length) for it in state.live() if it.segment is not None]
        if plan is None or (not refs and (self.buffer is None or self.buffer.size == 0)):
            self.metrics = {}
            return
        packs, buffer = select_packs(plan, refs, buffer=self.buffer,
                                     micro_batch=self.rt.config.training.per_device_train_batch_size)
        self.buffer = buffer if buffer is not None else self.buffer
        state.packs_core = packs
        self.metrics, self.ema = pack_metrics(packs, self.ema)


def replay(inp: ReplayInput, *, config: Config, ctx: TokenContext, progress: bool = True) -> ReplayRun:
    """Replay every recorded step of ``inp`` under ``config`` (see the module docstring)."""
    backend = RecordedBackend(_records(inp.samples), source=str(inp.path))
    rt = build_replay_runtime(config, ctx, backend)
    rt.prompts_by_id = {s.sample_id: s.prompt_ids for s in inp.samples}
    data = _dataset_samples(rt, inp)
    groups: dict[tuple[str, int], list[ReplaySample]] = defaultdict(list)
    for s in inp.samples:
        groups[(s.mode, s.step)].append(s)
    epochs, packer = _Epochs(rt, len(data["train"])), _Packer(rt)
    replayed: list[ReplayedSample] = []
    digests: dict[int, str] = {}
    traces = []
    train_steps: list[tuple[int, dict[str, float]]] = []
    eval_steps: list[tuple[int, list[SampleOutcome]]] = []
    order = sorted(groups, key=lambda k: (k[1], k[0] == "train"))  # eval at step s ran before train step s
    for mode, step in tqdm(order, desc="replay", unit="step", disable=not progress):
        rows = groups[(mode, step)]
        state = StepState(step=step, channel=Channel.B, is_eval=mode == "eval")
        epoch = 0 if mode == "eval" else epochs.at(step)
        state.items = [Item(smp, rt.target_sample(smp, epoch=epoch), epoch) for smp in (_sample_of(r, data) for r in rows)]
        backend.at_step(step, mode=mode)
        work = StepWork(rt, state, select=lambda s: None, pack=packer, log=lambda s: None)
        machine = StepMachine(work, trace=state.trace)
        if mode == "eval":
            machine.run_eval()
        else:
            machine.run_replay()
        traces.append((step, mode, tuple(state.trace)))
        outs = []
        for row, item in zip(rows, state.items, strict=True):
            o = outcome(item, rt, with_target=mode == "train") if item.matched is not None else None
            replayed.append(ReplayedSample(row, item, o))
            if o is not None and item.dropped is None:
                outs.append(o)
        if mode == "eval":
            eval_steps.append((step, outs))
            continue
        targets = [(it.sample.sample_id, it.target) for it in state.items if it.target is not None]
        if targets:
            digests[step] = targets_digest(targets)
        train_steps.append((step, _step_metrics(rt, state, outs, packer.metrics)))
    metrics, logged = _windows(rt, train_steps, eval_steps, replayed)
    return ReplayRun(inp, tuple(replayed), metrics, tuple(logged), digests, tuple(traces))


def _step_metrics(rt: ReplayRuntime, state: StepState, outs: list[SampleOutcome],
                  packing: dict[str, float]) -> dict[str, float]:
    drops = {"rollout/dropped_samples_total": float(sum(state.drops.values())),
             **{f"rollout/dropped_samples/{k}": float(v) for k, v in state.drops.items()}}
    return merge_metrics(drops, rollout_config_metrics(rt.bound), rollout_metrics(outs, ctx=rt.ctx), packing)


def _windows(rt: ReplayRuntime, train_steps: list[tuple[int, dict[str, float]]],
             eval_steps: list[tuple[int, list[SampleOutcome]]],
             replayed: Sequence[ReplayedSample]) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The whole recording's metrics, and one record per training log line (``training.logging_steps``)."""
    t, variant = rt.config.training, rt.bound.variant
    logged: list[dict[str, Any]] = []
    total = MetricWindow(variant=variant)
    window = MetricWindow(variant=variant)

    def due(done: int) -> bool:  # StepLogger.maybe_flush's cadence
        return done % t.logging_steps == 0 or (t.logging_first_step and done == 1)

    def flush(done: int) -> None:
        if window.pending_steps:
            logged.append({"mode": "train", "step": done, "metrics": window.reduce()})

    prev_done = 0
    for step, m in train_steps:
        for done in range(prev_done + 1, step + 1):  # log lines that fell on steps without rollouts
            if due(done):
                flush(done)
        total.add(m, step)
        window.add(m, step)
        prev_done = step + 1
        if due(prev_done):
            flush(prev_done)
    if window.pending_steps:  # the run's final flush: the next due step, or the end of training
        end = t.max_steps if t.max_steps is not None and t.max_steps >= prev_done else prev_done
        flush(next((d for d in range(prev_done, end + 1) if due(d)), end))
    for step, outs in eval_steps:
        if outs:
            ew = MetricWindow(variant=variant, mode=Mode.EVAL)
            ew.add(eval_metrics(outs, ctx=rt.ctx), step)
            logged.append({"mode": "eval", "step": step, "metrics": ew.reduce()})
    metrics = total.reduce() if train_steps else {}
    evaluated = [o for _, outs in eval_steps for o in outs] or [
        r.outcome for r in replayed if r.outcome is not None and r.item.dropped is None]
    if evaluated:
        ew = MetricWindow(variant=variant, mode=Mode.EVAL)
        ew.add(eval_metrics(evaluated, ctx=rt.ctx), 0)
        metrics.update(ew.reduce())
    return metrics, logged

