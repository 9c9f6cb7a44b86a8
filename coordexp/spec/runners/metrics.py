"""Runner for ``Transition: metrics``: step metrics, logging windows, rank reduction, key registry, log lines.

Input: one case or ``{"cases": [...]}``; a case names its ``kind``:

- ``window``: ``{"variant", "mode"?, "steps": [{"step", "metrics"}]}`` or ``"ranks": [[steps], ...]`` (each
  rank's window reduced together like DDP) -> the logged record and the steps left pending.
- ``rollouts``: ``{"variant", "config"?: [--set overrides], "steps": [{"step", "samples": [sample...],
  "generated"?, "metrics"?, "packs"?}]}``; samples as in ``_samples``; per step the rollout metrics,
  the extra base ``metrics`` and the packing metrics of the step's ``packs`` (each a list of segment
  lengths) are merged into the step's metrics, added to one window, reduced -> the record.
- ``packs``: ``{"lengths", "cap", "min_fill_ratio", "steps": [pops per step]}`` -> each pack and each
  step's window record.
- ``schedule``: ``{"schedule": {stage2_ab.schedule}, "steps": [s, ...]}`` -> the schedule metrics of those steps.
- ``merge``: ``{"variant", "parts": [{...}, ...]}`` -> the merged step metrics and their window record.
- ``parity``: ``{"variant", "mode", "features", "add": [...], "remove": [...]}`` -> the parity report of a run
  that logged every expected key, plus ``add``, minus ``remove``.
- ``diagnostic``: ``{"calls": [{"name", "fail"}]}`` -> per call the result, the warnings, the metrics.
- ``log_lines``: ``{"lines": [obj | "raw"]}`` -> each decoded record or its error; or ``{"write": [records],
  "meta": [...]}`` -> the lines the sinks wrote (``time`` fixed at 0).

Optional in every case: ``show`` (keys to keep in records, in that order; missing ones read ``null``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import cattrs

from coordexp.bind import schedule_from_section
from coordexp.config.convert import config_converter
from coordexp.config.schema_ab import ScheduleConfig
from coordexp.core.pack import Pack, PackBuffer, SegmentRef, insert, pop_pack
from coordexp.core.schedule import RealizedRatio, channel_for_step
from coordexp.errors import CoordexpError, SpecError
from coordexp.eval.detection import rollout_metrics
from coordexp.spec.runners import each_case, expected_error
from coordexp.spec.runners._samples import Pipeline, rounded
from coordexp.telemetry.diagnostics import DiagnosticGuard
from coordexp.telemetry.keys import REGISTRY, Mode, check_parity
from coordexp.telemetry.sinks import JsonlSink, LogRecord, LogSinks, decode_line
from coordexp.telemetry.step import PackLengthEma, pack_metrics, schedule_metrics
from coordexp.telemetry.window import MetricWindow, finalize, merge_metrics, reduce_states

TRANSITION = "metrics"


def _show(record: dict[str, float], case: dict[str, Any]) -> dict[str, Any]:
    rec = rounded(record)
    if "show" not in case:
        return rec
    return {k: rec.get(k) for k in case["show"]}


def _window(case: dict[str, Any]) -> dict[str, Any]:
    ranks = case["ranks"] if "ranks" in case else [case["steps"]]
    windows = [MetricWindow(variant=case["variant"], mode=case.get("mode", "train")) for _ in ranks]
    for window, steps in zip(windows, ranks, strict=True):
        for st in steps:
            window.add(st["metrics"], st["step"])
    state = reduce_states([w.drain() for w in windows])
    return {"record": _show(finalize(state), case), "pending_steps": [w.pending_steps for w in windows]}


def _one_pack(lengths: list[int]) -> Pack:
    """A pack holding exactly ``lengths`` (a buffer of just them, popped with cap = their sum)."""
    buffer = insert(PackBuffer(capacity=len(lengths), cap=sum(lengths), min_fill_ratio=1.0),
                    [SegmentRef(f"seg{i}", n) for i, n in enumerate(lengths)])
    return pop_pack(buffer)[0]


def _rollouts(case: dict[str, Any]) -> dict[str, Any]:
    pipe = Pipeline(case["variant"], case.get("config", ()))
    window = MetricWindow(variant=case["variant"])
    ema = PackLengthEma()
    index = 0
    for st in case["steps"]:
        outcomes = []
        for sample in st.get("samples", []):
            outcomes.append(pipe.outcome(sample, index=index, train=True))
            index += 1
        packed, ema = pack_metrics([_one_pack(lengths) for lengths in st.get("packs", [])], ema)
        rollout = rollout_metrics(outcomes, ctx=pipe.ctx, generated=st.get("generated", True))
        window.add(merge_metrics(rollout, st.get("metrics", {}), packed), st["step"])
    out = {"record": _show(window.reduce(), case), "pending_steps": window.pending_steps}
    if "absent" in case:
        out["registered"] = {k: k in REGISTRY.keys for k in case["absent"]}
    return out


def _packs(case: dict[str, Any]) -> dict[str, Any]:
    buffer = insert(PackBuffer(capacity=len(case["lengths"]), cap=case["cap"], min_fill_ratio=case["min_fill_ratio"]),
                    [SegmentRef(f"s{i}", n) for i, n in enumerate(case["lengths"])])
    window, ema, packs_out, steps_out = MetricWindow(variant="rollout_matching_sft"), PackLengthEma(), [], []
    for step, pops in enumerate(case["steps"]):
        packs, running = [], ema
        for _ in range(pops):
            pack, buffer = pop_pack(buffer)
            packs.append(pack)
            running = running.update(pack)
            packs_out.append({"segments": [s.key for s in pack.segments], "fill": round(pack.fill, 6),
                              "selected_total_len": pack.total_len, "buffer": pack.buffer_remaining,
                              "underfilled": pack.underfilled, "avg_segment_len_last": round(running.last, 6),
                              "avg_segment_len_ema": round(running.ema, 6)})
        metrics, ema = pack_metrics(packs, ema)
        window.add(metrics, step)
        steps_out.append(_show(window.reduce(), case))
    return {"packs": packs_out, "steps": steps_out}


def _schedule(case: dict[str, Any]) -> dict[str, Any]:
    try:
        section = config_converter.structure(case["schedule"], ScheduleConfig)
    except cattrs.BaseValidationError as exc:
        raise SpecError(f"metrics fixture: not a stage2_ab.schedule section: {case['schedule']!r}") from exc
    schedule = schedule_from_section(section)
    realized, out = RealizedRatio(), {}
    for step in range(max(case["steps"]) + 1):
        realized = realized.record(step, channel_for_step(step, schedule=schedule))
        if step in case["steps"]:
            out[str(step)] = rounded(schedule_metrics(step, schedule=schedule, realized=realized))
    return out


def _merge(case: dict[str, Any]) -> dict[str, Any]:
    merged = merge_metrics(*case["parts"])
    window = MetricWindow(variant=case["variant"])
    window.add(merged, 0)
    return {"merged": merged, "record": _show(window.reduce(), case)}


def _parity(case: dict[str, Any]) -> dict[str, Any]:
    mode, variant, features = Mode(case["mode"]), case["variant"], set(case.get("features", ()))
    expected = {k.name for k in REGISTRY.for_mode(mode) if variant in k.variants and not k.internal
                and not k.optional and k.requires <= features}
    logged = (expected | set(case.get("add", ()))) - set(case.get("remove", ()))
    report = check_parity(logged, registry=REGISTRY, mode=mode, variant=variant, features=features)
    return {"unregistered": list(report.unregistered), "wrong_variant": list(report.wrong_variant),
            "missing": list(report.missing), "ok": report.ok}


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _fails() -> None:
    raise RuntimeError("encoder not loaded")


def _diagnostic(case: dict[str, Any]) -> dict[str, Any]:
    guard, handler = DiagnosticGuard(), _Collect()
    logger = logging.getLogger("coordexp.telemetry.diagnostics")
    logger.addHandler(handler)
    try:
        calls = []
        for call in case["calls"]:
            try:
                result = guard.run(call["name"], _fails if call["fail"] else (lambda: "ok"))
                calls.append({"name": call["name"], "result": result})
            except CoordexpError as exc:
                calls.append({"name": call["name"], **expected_error(exc)})
    finally:
        logger.removeHandler(handler)
    return {"calls": calls, "warnings": handler.messages, "metrics": guard.metrics()}


def _log_lines(case: dict[str, Any]) -> Any:
    if "lines" in case:
        out = []
        for n, line in enumerate(case["lines"], 1):
            text = line if isinstance(line, str) else json.dumps(line)
            try:
                rec = decode_line(text, where=f"logging.jsonl:{n}")
                out.append({"mode": rec.mode, "step": rec.step, "metrics": dict(rec.metrics), "meta": dict(rec.meta)})
            except CoordexpError as exc:
                out.append(expected_error(exc))
        return out
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "logging.jsonl"
        sinks = LogSinks([JsonlSink(path)])
        for rec in case.get("write", []):
            sinks.write(LogRecord(rec["mode"], rec["step"], metrics={k: float(v) for k, v in rec["metrics"].items()},
                                  time=0.0))
        written_meta = [sinks.write_meta(i, meta, stamp=0.0) for i, meta in enumerate(case.get("meta", []))]
        sinks.close()
        lines = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    for line in lines:
        line["time"] = 0
    return {"lines": lines, "meta_written": written_meta}


_KINDS = {"window": _window, "rollouts": _rollouts, "packs": _packs, "schedule": _schedule, "merge": _merge,
          "parity": _parity, "diagnostic": _diagnostic, "log_lines": _log_lines}


def _run_case(case: Any) -> Any:
    if not isinstance(case, dict) or case.get("kind") not in _KINDS:
        raise SpecError(f"metrics fixture case needs a 'kind' among {sorted(_KINDS)}, got {case!r}")
    try:
        return _KINDS[case["kind"]](case)
    except SpecError:
        raise
    except CoordexpError as exc:  # an expected error is this case's result; the other cases still run
        return expected_error(exc)


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
