"""Per-sample prediction files of an evaluation: one JSON line per sample, a success or an error line.

Why two schemas: a sample the evaluator could not score (its image did not decode, its prompt did
not encode) must still appear in the file, or the file silently covers fewer samples than the metrics
claim. Success line (coordinates norm1000; pixels follow from width/height)::

    {"format_version": 1, "step": 40, "sample_id": "val.jsonl:3", "status": "ok", "width": 640, "height": 480,
     "gt": [{"desc", "geom_type", "points"}], "pred": [{"desc", "geom_type", "points", "key"}],
     "matches": [{"pred_i", "gt_i", "iou"}], "fp_pred_indices": [...], "fn_gt_indices": [...],
     "truncated": false, "dropped": {"wrong_arity": 1}, "stop_rule": null, "completion_len": 211}

Error line::

    {"format_version": 1, "step": 40, "sample_id": "val.jsonl:9", "status": "error", "stage": "prompt",
     "error": {"type": "DataError", "message": "..."}}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from coordexp.core.coordjson import GTObject
from coordexp.errors import DataError
from coordexp.eval.detection import SampleOutcome
from coordexp.telemetry.sinks import AppendLines

FORMAT_VERSION = 1
_COMMON = {"format_version": int, "step": int, "sample_id": str, "status": str}
_OK = {"width": int, "height": int, "gt": list, "pred": list, "matches": list, "fp_pred_indices": list,
       "fn_gt_indices": list, "truncated": bool, "dropped": dict, "stop_rule": (str, type(None)),
       "completion_len": int}
_ERROR = {"stage": str, "error": dict}
_OBJECT = {"desc": str, "geom_type": str, "points": list}


def success_line(
    outcome: SampleOutcome, *, step: int, gt: Sequence[GTObject], width: int, height: int
) -> dict[str, Any]:
    """The success record of one evaluated sample (predictions as Match saw them)."""
    m = outcome.match
    return {
        "format_version": FORMAT_VERSION, "step": step, "sample_id": outcome.sample_id, "status": "ok",
        "width": width, "height": height,
        "gt": [{"desc": g.desc, "geom_type": str(g.geom_type), "points": list(g.points)} for g in gt],
        "pred": [{"desc": o.desc, "geom_type": str(o.geom_type), "points": list(o.coord_bins), "key": o.key}
                 for o in outcome.parse.valid_objects],
        "matches": [{"pred_i": p, "gt_i": g, "iou": iou} for (p, g), iou in zip(m.matched_pairs, m.matched_ious)],
        "fp_pred_indices": list(m.fp_pred_indices), "fn_gt_indices": list(m.fn_gt_indices),
        "truncated": outcome.truncated,
        "dropped": {r.value: n for r, n in outcome.parse.dropped_by_reason.items() if n},
        "stop_rule": None if outcome.stop_rule is None else outcome.stop_rule.value,
        "completion_len": outcome.completion_len,
    }


def error_line(*, sample_id: str, step: int, stage: str, exc: BaseException) -> dict[str, Any]:
    """The error record of a sample a stage could not evaluate."""
    return {"format_version": FORMAT_VERSION, "step": step, "sample_id": sample_id, "status": "error",
            "stage": stage, "error": {"type": type(exc).__name__, "message": str(exc)}}


def check_line(payload: object, *, where: str) -> dict[str, Any]:
    """Validate one record against its schema (exact keys and types); errors name ``where``."""
    if not isinstance(payload, dict):
        raise DataError(f"{where}: a prediction line is a JSON object, got {type(payload).__name__}")
    status = payload.get("status")
    if status not in ("ok", "error"):
        raise DataError(f"{where}: 'status' must be 'ok' or 'error', got {status!r}")
    schema = {**_COMMON, **(_OK if status == "ok" else _ERROR)}
    _check_fields(payload, schema, where)
    if payload["format_version"] != FORMAT_VERSION:
        raise DataError(f"{where}: format_version {payload['format_version']} is not supported ({FORMAT_VERSION} is)")
    if status == "error":
        _check_fields(payload["error"], {"type": str, "message": str}, f"{where}: error")
        return payload
    for field in ("gt", "pred"):
        for i, obj in enumerate(payload[field]):
            extra = {"key": (str, type(None))} if field == "pred" else {}
            _check_fields(obj, {**_OBJECT, **extra}, f"{where}: {field}[{i}]")
    for i, match in enumerate(payload["matches"]):
        _check_fields(match, {"pred_i": int, "gt_i": int, "iou": (int, float)}, f"{where}: matches[{i}]")
    return payload


def _check_fields(obj: object, schema: Mapping[str, type | tuple[type, ...]], where: str) -> None:
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected an object, got {type(obj).__name__}")
    missing, extra = sorted(set(schema) - set(obj)), sorted(set(obj) - set(schema))
    if missing or extra:
        raise DataError(f"{where}: fields missing {missing} / unknown {extra}")
    for name, kind in schema.items():
        value = obj[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            raise DataError(f"{where}: {name!r} has the wrong type ({type(value).__name__})")


class PredictionWriter:
    """Appends checked prediction lines (one whole line per write) to ``predictions.jsonl``."""

    def __init__(self, path: Path | str) -> None:
        self._file = AppendLines(path)
        self.path = self._file.path

    def write(self, payload: Mapping[str, Any]) -> None:
        line = check_line(dict(payload), where=f"{self.path} (sample {payload.get('sample_id')})")
        self._file.append((json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8"))

    def close(self) -> None:
        self._file.close()


def read_predictions(path: Path | str) -> list[dict[str, Any]]:
    """Every line of a prediction file, validated; errors name ``file:line``."""
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                payload = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not a JSON line ({exc.msg})") from exc
            out.append(check_line(payload, where=f"{path}:{n}"))
    return out
