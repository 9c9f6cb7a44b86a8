"""Runner for ``Transition: eval``: production-style evaluation (rollout -> parse -> match -> metrics).

Input: one case or ``{"cases": [...]}``; a case names its ``kind`` (default ``evaluate``):

- ``evaluate``: ``{"variant"?, "config"?: [--set overrides], "ranks": [[sample, ...], ...] | "samples": [...],
  "runtime_s": [per rank] | x, "batches": n}`` -> the eval record (every rank's set reduced together) and
  whether ``eval_loss`` is in it. Samples as in ``_samples`` (no target is built at evaluation).
- ``predictions``: ``{"samples": [...], "errors": [{"sample_id", "stage", "type", "message"}], "lines": [...]}``
  -> the prediction-file lines written for the samples and errors and read back, and each extra raw
  ``line`` checked (its record or its error).
- ``best``: ``{"metric", "greater_is_better", "values": [...]}`` -> after each evaluation whether it is
  the new best and the best so far (``"nan"`` stands for a NaN value).
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

from coordexp import errors
from coordexp.errors import CoordexpError, SpecError
from coordexp.eval.detection import best_metric_key, eval_metrics, is_better
from coordexp.eval.predictions import PredictionWriter, check_line, error_line, read_predictions, success_line
from coordexp.spec.runners import each_case, expected_error
from coordexp.spec.runners._samples import Pipeline, rounded
from coordexp.telemetry.window import MetricWindow, finalize, reduce_states

TRANSITION = "eval"


def _evaluate(case: dict[str, Any]) -> dict[str, Any]:
    variant = case.get("variant", "rollout_matching_sft")
    pipe = Pipeline(variant, case.get("config", ()))
    ranks = case["ranks"] if "ranks" in case else [case["samples"]]
    runtimes = case.get("runtime_s", 1.0)
    runtimes = runtimes if isinstance(runtimes, list) else [runtimes] * len(ranks)
    states, index = [], 0
    for samples, runtime in zip(ranks, runtimes, strict=True):
        outcomes = []
        for sample in samples:
            outcomes.append(pipe.outcome(sample, index=index, train=False))
            index += 1
        window = MetricWindow(variant=variant, mode="eval")
        window.add({**eval_metrics(outcomes, ctx=pipe.ctx), "eval_time/runtime_s": float(runtime),
                    "eval_time/steps": float(case.get("batches", 1))}, 0)
        states.append(window.drain())
    record = finalize(reduce_states(states))
    out: dict[str, Any] = {"record": rounded(record), "has_eval_loss": "eval_loss" in record}
    if "show" in case:
        out["record"] = {k: out["record"].get(k) for k in case["show"]}
    return out


def _predictions(case: dict[str, Any]) -> dict[str, Any]:
    pipe = Pipeline(case.get("variant", "rollout_matching_sft"))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "predictions.jsonl"
        writer = PredictionWriter(path)
        for i, sample in enumerate(case.get("samples", [])):
            outcome = pipe.outcome(sample, index=i, train=False)
            gt = pipe.gt_of(sample, outcome.sample_id)
            writer.write(success_line(outcome, step=case.get("step", 0), gt=gt, width=sample.get("width", 1000),
                                      height=sample.get("height", 1000)))
        for err in case.get("errors", []):
            exc = getattr(errors, err["type"])(err["message"])
            writer.write(error_line(sample_id=err["sample_id"], step=case.get("step", 0), stage=err["stage"], exc=exc))
        writer.close()
        written = read_predictions(path)
    checked = []
    for n, line in enumerate(case.get("lines", []), 1):
        try:
            checked.append({"ok": check_line(line, where=f"predictions.jsonl:{n}")["status"]})
        except CoordexpError as exc:
            checked.append(expected_error(exc))
    for line in written:
        for m in line.get("matches", []):
            m["iou"] = round(m["iou"], 6)
    return {"written": written, "checked": checked}


def _best(case: dict[str, Any]) -> list[dict[str, Any]]:
    key, best, out = best_metric_key(case["metric"]), None, []
    for raw in case["values"]:
        value = math.nan if raw == "nan" else float(raw)
        better = is_better(case["metric"], value, best, case["greater_is_better"])
        best = value if better else best
        out.append({"value": raw, "is_better": better, "best": best})
    return [{"key": key}, *out]


_KINDS = {"evaluate": _evaluate, "predictions": _predictions, "best": _best}


def _run_case(case: Any) -> Any:
    kind = case.get("kind", "evaluate") if isinstance(case, dict) else None
    if kind not in _KINDS:
        raise SpecError(f"eval fixture case needs a 'kind' among {sorted(_KINDS)}, got {case!r}")
    try:
        return _KINDS[kind]({k: v for k, v in case.items() if k != "kind"})
    except SpecError:
        raise
    except CoordexpError as exc:  # an expected error is this case's result; the other cases still run
        return expected_error(exc)


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
