"""The Log state's work: step metrics into the logging window, records to the sinks, dumps, recordings, progress.

Every metric is a registered key (``coordexp.telemetry.keys``); a step's metrics are merged from the parts
that own them (learner, rollout outcomes, packing, schedule, executor bookkeeping) and folded into one
``MetricWindow``, which is reduced across ranks and written every ``training.logging_steps`` (and after the
first step with ``logging_first_step``, and at the end). Evaluation writes its own record at once.
Only rank 0 writes the run folder's logs; every rank writes its own monitor dumps and rollout records
when configured (rank 0 only by default).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from tqdm.auto import tqdm

from coordexp.config import config_to_yaml
from coordexp.core.digest import targets_digest
from coordexp.core.schedule import Channel
from coordexp.eval.detection import SampleOutcome, eval_metrics, rollout_metrics
from coordexp.telemetry.desc_monitor import DescMonitor
from coordexp.telemetry.diagnostics import DiagnosticGuard
from coordexp.telemetry.keymodel import Mode
from coordexp.telemetry.monitor import MonitorDumper, MonitorPolicy, MonitorSample, summarize_messages
from coordexp.telemetry.recording import RolloutRecorder, config_hash, rollouts_path
from coordexp.telemetry.sinks import AppendLines, JsonlSink, LogRecord, LogSinks, TensorBoardSink
from coordexp.telemetry.step import MatchedSample, desc_metrics, pack_metrics, schedule_metrics
from coordexp.telemetry.window import MetricWindow, finalize, merge_metrics, reduce_across_ranks

if TYPE_CHECKING:
    from coordexp.bind import Bound
    from coordexp.executor import Executor
    from coordexp.runtime import Runtime
    from coordexp.stages import Item, StepState

log = logging.getLogger("coordexp")
LOG_FILE, TRACE_FILE = "logging.jsonl", "trace.jsonl"
CONFIG_READS = (
    "training.logging_steps",
    "training.logging_first_step",
    "training.logging_dir",
    "custom.extra.rollout_matching.record_rollouts",
    "custom.extra.rollout_matching.debug_dump_parse_failures",
    "custom.extra.rollout_matching.debug_dump_max",
)
PARSE_LOG_CHARS = 300  # of raw and prefix text per logged parse failure


def outcome(item: Item, rt: Runtime, *, with_target: bool) -> SampleOutcome:
    r = item.result
    return SampleOutcome(
        sample_id=item.sample.sample_id, parse=item.parsed, match=item.matched,
        completion_len=r.new_tokens, prompt_len=len(r.rollout.prompt_ids or ()), finish_reason=r.rollout.finish_reason,
        stop_rule=r.stop_rule, decode_mode=rt.bound.decoding.decode_mode, cut=item.view.cut,
        target=item.target if with_target else None,
    )


def rollout_config_metrics(bound: Bound) -> dict[str, float]:
    """The decoding knobs a Channel-B step ran with (offline replay logs the same keys)."""
    dec = bound.decoding
    return {
        "rollout/max_new_tokens": float(dec.max_new_tokens),
        "rollout/do_sample": float(dec.samples),
        "rollout/temperature": dec.temperature if dec.samples else 1.0,
        "rollout/top_p": dec.top_p if dec.samples else 1.0,
        "rollout/top_k": float(max(dec.top_k, 0)) if dec.samples else 0.0,
        "rollout/repeat_terminate_active": float(bound.stop_rules.enabled),
    }


def matched_samples(items: list[Item]) -> list[MatchedSample]:
    """What the desc monitor reads of each matched item: the predictions Match saw, the GT, the match."""
    return [(it.view.parse.valid_objects, it.target_sample.gt, it.matched) for it in items if it.matched is not None]


class StepLogger:
    def __init__(self, rt: Runtime, folder: Path, *, total_steps: int, start_step: int = 0,
                 samples_seen: int = 0) -> None:
        self.rt = rt
        self.desc_monitor = DescMonitor.build(rt.bound.desc_monitor)  # a missing encoder fails here, before any file
        t = rt.config.training
        self.folder = folder
        self.guard = DiagnosticGuard()
        self.window = MetricWindow(variant=rt.bound.variant)
        self.sinks = LogSinks(self._sinks(folder) if rt.dist.is_main else [])
        self.traces = AppendLines(folder / TRACE_FILE) if rt.dist.is_main else None
        rm = rt.config.rollout_matching
        policy = MonitorPolicy.from_config(rm.monitor_dump, logging_steps=t.logging_steps,
                                           logging_first_step=t.logging_first_step, run_dir=folder)
        self.monitor = MonitorDumper(policy, rank=rt.dist.rank) if policy is not None else None
        self.recorder = (RolloutRecorder(rollouts_path(folder, rt.dist.rank), config_hash=config_hash(config_to_yaml(rt.config)))
                         if rm.record_rollouts else None)
        self.samples_seen = samples_seen  # a resumed run continues the count of drawn samples
        self.last_eval: dict[str, float] | None = None
        self.dump_overdue = False  # a dump fell due on a Channel-A step
        self.bar = tqdm(total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True,
                        disable=not rt.dist.is_main)

    def _sinks(self, folder: Path) -> list:
        t = self.rt.config.training
        events = Path(t.logging_dir) if t.logging_dir else folder / "events"
        return [JsonlSink(folder / LOG_FILE), TensorBoardSink(events, guard=self.guard)]

    # -- train steps ----------------------------------------------------------------------------
    def step_done(self, state: StepState, ex: Executor) -> None:
        rt = self.rt
        parts = [self._bookkeeping(state, ex), self.guard.metrics()]
        if state.stats is not None:
            parts.append(state.stats.metrics())
        if state.channel is Channel.B:
            outcomes = [outcome(it, rt, with_target=True) for it in state.live() if it.matched is not None]
            parts.append(rollout_metrics(outcomes, ctx=rt.ctx, generated=not state.reuse))
            if not state.reuse:  # an M-step's pairs were measured on its E-step
                parts.append(self.guard.run("desc_monitor", desc_metrics, self.desc_monitor,
                                            matched_samples(state.live()), step=state.step) or {})
        packing, ex.progress.pack_ema = pack_metrics(state.packs_core, ex.progress.pack_ema)
        parts.append(packing)
        if rt.bound.schedule is not None:
            parts.append(schedule_metrics(state.step, schedule=ex.schedule, realized=ex.realized))
        metrics = merge_metrics(*parts)
        metrics = merge_metrics(metrics, ex.guard_step(state, metrics))
        state.metrics.update(metrics)
        self.window.add(metrics, state.step)
        self._trace(state)
        self._log_parse_failures(state)
        self._dump(state)
        self._record(state, mode="train")
        self._progress(state, metrics, ex)

    def _bookkeeping(self, state: StepState, ex: Executor) -> dict[str, float]:
        rt = self.rt
        n = len(state.items)
        if not state.reuse:  # an M-step learns the cached window again; it draws no new sample
            self.samples_seen += len(state.plan.indices) if state.plan is not None else n
        out = {
            "train/samples_total": float(n),
            "train/samples_seen": float(self.samples_seen),
            "train/global_step": float(state.step + 1),
            "train/epoch": ex.epoch_progress(),
            "rollout/dropped_samples_total": float(sum(state.drops.values())),
            "learn/skipped_steps": float(state.learn_skipped),
            **{f"rollout/dropped_samples/{k}": float(v) for k, v in state.drops.items()},
            "time/step_s": sum(state.timings.values()),
            **state.timings,
            **(state.pipeline.metrics() if state.pipeline is not None else {}),
        }
        if state.channel is Channel.B:
            out.update(rollout_config_metrics(rt.bound))
            out.setdefault("time/rollout_generate_s", 0.0)
        if rt.bound.rollout_buffer.enabled and state.plan is not None:
            out.update(state.plan.buffer_metrics())
        out.setdefault("time/forward_s", 0.0)
        out.setdefault("time/rollout_teacher_encode_s", 0.0)
        return out

    def _progress(self, state: StepState, metrics: dict[str, float], ex: Executor) -> None:
        post = {"ch": state.channel.value, "loss": f"{metrics.get('loss', float('nan')):.3f}"}
        last = self.last_eval
        if last is not None:
            post["F1"] = f"{last.get('eval_rollout/f1', 0.0):.3f}"
        gen = metrics.get("time/rollout_generate_s", 0.0)
        tokens = metrics.get("rollout/gen_new_tokens_total", 0.0)
        if gen > 0:
            post["tok/s"] = f"{tokens / gen:.0f}"
        if ex.stability.active:  # until the next rollout evaluation comes back healthy
            post["ALARM"] = ",".join(ex.stability.active)
        self.bar.set_postfix(post, refresh=False)
        self.bar.update(1)

    def maybe_flush(self, done: int, *, final: bool = False) -> None:
        t = self.rt.config.training
        due = final or done % t.logging_steps == 0 or (t.logging_first_step and done == 1)
        if not due or self.window.pending_steps == 0:
            return
        record = finalize(reduce_across_ranks(self.window.drain()))
        self.sinks.write(LogRecord("train", done, record))

    # -- evaluation -------------------------------------------------------------------------------
    def eval_done(self, batches: list[StepState], ex: Executor, *, step: int, seconds: float) -> dict[str, float]:
        rt = self.rt
        outcomes = [outcome(it, rt, with_target=False) for b in batches for it in b.live() if it.matched is not None]
        window = MetricWindow(variant=rt.bound.variant, mode=Mode.EVAL)
        descs = self.guard.run("desc_monitor", desc_metrics, self.desc_monitor,
                               matched_samples([it for b in batches for it in b.live()]), prefix="eval_rollout")
        window.add(merge_metrics(eval_metrics(outcomes, ctx=rt.ctx), descs or {},
                                 {"eval_time/runtime_s": seconds, "eval_time/steps": float(len(batches))}), step)
        record = finalize(reduce_across_ranks(window.drain()))
        self.sinks.write(LogRecord("eval", step, record))
        for b in batches:
            self._trace(b)
            self._record(b, mode="eval")
        self.last_eval = record
        f1 = record.get("eval_rollout/f1", 0.0)
        n = int(record.get("eval_rollout/samples", 0))
        self.bar.write(f"eval @ step {step}: F1 {f1:.3f}, precision {record.get('eval_rollout/precision', 0):.3f}, "
                       f"recall {record.get('eval_rollout/recall', 0):.3f}, parse-valid "
                       f"{record.get('eval_rollout/parse_valid_rate', 0):.2f} on {n} samples")
        return record

    def _log_parse_failures(self, state: StepState) -> None:
        """``debug_dump_parse_failures``: the first ``debug_dump_max`` rollouts of the step with parse drops or a
        truncation, clipped, in the log (the counts are metrics either way)."""
        rm = self.rt.config.rollout_matching
        if not rm.debug_dump_parse_failures or state.reuse:
            return
        failed = [it for it in state.live() if it.parsed is not None and (it.parsed.dropped or it.parsed.truncated)]
        for it in failed[: rm.debug_dump_max]:
            p = it.parsed
            log.warning("step %d sample %s: %d dropped %s%s; raw %r; prefix %r", state.step, it.sample.sample_id,
                        p.n_dropped, [d.reason.value for d in p.dropped][:5], ", truncated" if p.truncated else "",
                        p.response_text[:PARSE_LOG_CHARS], p.prefix_text[:PARSE_LOG_CHARS])

    def _trace(self, state: StepState) -> None:
        """The states the step visited, with its channel and drops: one JSON line per step (or eval batch)."""
        if self.traces is None:
            return
        row = {"step": state.step, "mode": "eval" if state.is_eval else "train", "channel": state.channel.value,
               "reuse": state.reuse, "trace": state.trace, "dropped": dict(state.drops)}
        targets = [(it.sample.sample_id, it.target) for it in state.items if it.target is not None]
        if targets and not state.reuse:  # offline replay rebuilds these and compares the digest
            row["targets_sha"] = targets_digest(targets)
        self.traces.append((json.dumps(row, sort_keys=True) + "\n").encode("utf-8"))

    # -- dumps and recordings -----------------------------------------------------------------------
    def _dump(self, state: StepState) -> None:
        """Monitor dumps show rollouts: one due on a Channel-A step is written on the next Channel-B step."""
        if self.monitor is None:
            return
        due = self.monitor.should_dump(state.step)
        if state.channel is Channel.A:
            self.dump_overdue = self.dump_overdue or due
            return
        if not (due or self.dump_overdue):
            return
        samples = [s for s in (self._monitor_sample(it) for it in state.items) if s is not None]
        written = self.guard.run("monitor_dump", self.monitor.dump, state.step, samples, overdue=self.dump_overdue,
                                 meta={"channel": state.channel.value, "trace": state.trace, "reuse": state.reuse})
        if written:
            self.dump_overdue = False

    def _monitor_sample(self, item: Item) -> MonitorSample | None:
        if item.parsed is None or item.matched is None:
            return None  # Channel A (no rollout) or dropped before matching: nothing to show
        summary = summarize_messages(item.messages or [], item.sample.images)
        return MonitorSample.from_records(
            sample_id=item.sample.sample_id, messages_summary=summary, parse=item.parsed, view=item.view,
            match=item.matched, gt=item.target_sample.gt, ctx=self.rt.ctx, target=item.target,
            dropped_reason=item.dropped,
        )

    def _record(self, state: StepState, *, mode: str) -> None:
        if self.recorder is None or state.reuse:
            return
        for it in state.items:
            r = it.result
            if r is None:
                continue
            self.recorder.record(sample_id=it.sample.sample_id, step=state.step, prompt_ids=r.rollout.prompt_ids,
                                 completion_ids=r.rollout.completion_ids, finish_reason=r.rollout.finish_reason,
                                 stop_rule=r.stop_rule, mode=mode)

    def close(self) -> None:
        self.bar.close()
        self.sinks.close()
        if self.traces is not None:
            self.traces.close()
        if self.recorder is not None:
            self.recorder.close()
