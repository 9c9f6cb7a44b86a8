"""Where logged records go: ``logging.jsonl`` (line-atomic), TensorBoard event files, or both.

``logging.jsonl`` holds one JSON object per line, each a versioned record::

    {"schema_version": 1, "mode": "train", "step": 40, "time": 1767225600.0, "metrics": {...}}
    {"schema_version": 1, "mode": "eval", "step": 40, "time": ..., "metrics": {"eval_rollout/f1": 0.41, ...}}
    {"schema_version": 1, "mode": "meta", "step": 0, "time": ..., "meta": {"rollout_backend": "hf", ...}}

Line-atomic: each line is one ``os.write`` of the whole encoded line on an ``O_APPEND`` descriptor, so a
crash leaves whole lines, concurrent readers never see half a record, and a resumed run appends to the
same file (a resumed step is logged again; readers keep the last record per mode and step, see
``last_per_step``). Non-finite values (a NaN loss) are not valid JSON: they are written as ``null``
and listed under ``"nonfinite"``, so the line stays parseable and the event stays visible; TensorBoard
receives the NaN itself. ``meta`` records carry run constants (backend, server versions, sampling) and
are written only when they change.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from coordexp.errors import TelemetryError
from coordexp.telemetry.diagnostics import DiagnosticGuard

SCHEMA_VERSION = 1
MODES = ("train", "eval", "meta")
LOG_FILE = "logging.jsonl"


@attrs.frozen
class LogRecord:
    """One logged window (train), evaluation (eval) or run-constant set (meta)."""

    mode: str = attrs.field(validator=attrs.validators.in_(MODES))
    step: int  # optimizer steps done when it was logged
    metrics: Mapping[str, float] = attrs.Factory(dict)
    meta: Mapping[str, Any] = attrs.Factory(dict)  # meta records only: JSON-ready run constants
    time: float = attrs.Factory(time.time)  # unix seconds

    @property
    def nonfinite(self) -> tuple[str, ...]:
        return tuple(k for k, v in self.metrics.items() if not math.isfinite(v))


def encode_line(record: LogRecord) -> bytes:
    """The record as one UTF-8 JSON line (non-finite metrics as null, listed under "nonfinite")."""
    payload: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "mode": record.mode, "step": record.step,
                               "time": record.time}
    if record.mode == "meta":
        payload["meta"] = dict(record.meta)
    else:
        payload["metrics"] = {k: (v if math.isfinite(v) else None) for k, v in record.metrics.items()}
        if record.nonfinite:
            payload["nonfinite"] = list(record.nonfinite)
    try:
        text = json.dumps(payload, allow_nan=False, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TelemetryError(
            f"log record of step {record.step} ({record.mode}) is not JSON-serializable: {exc}"
        ) from exc
    return (text + "\n").encode("utf-8")


def _int(payload: Mapping[str, Any], field: str, where: str) -> int:
    value = payload.get(field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise TelemetryError(f"{where}: {field!r} must be an integer, got {value!r}")
    return value


def decode_line(line: str, *, where: str) -> LogRecord:
    """Parse and check one line; ``where`` (``file:line``) prefixes every error."""
    try:
        payload = json.loads(line)
    except json.JSONDecodeError as exc:
        raise TelemetryError(f"{where}: not a JSON line ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(payload, dict):
        raise TelemetryError(f"{where}: a log line is a JSON object, got {type(payload).__name__}")
    version = _int(payload, "schema_version", where)
    if version != SCHEMA_VERSION:
        raise TelemetryError(
            f"{where}: unsupported schema_version {version}; this coordexp reads version {SCHEMA_VERSION}"
        )
    mode = payload.get("mode")
    if mode not in MODES:
        raise TelemetryError(f"{where}: mode must be one of {', '.join(MODES)}, got {mode!r}")
    step = _int(payload, "step", where)
    stamp = payload.get("time")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
        raise TelemetryError(f"{where}: 'time' must be a number, got {stamp!r}")
    if mode == "meta":
        meta = payload.get("meta")
        if not isinstance(meta, dict):
            raise TelemetryError(f"{where}: a meta record needs a 'meta' object")
        return LogRecord(mode, step, meta=meta, time=float(stamp))
    return LogRecord(mode, step, metrics=_metrics(payload, where), time=float(stamp))


def _metrics(payload: Mapping[str, Any], where: str) -> dict[str, float]:
    metrics, nonfinite = payload.get("metrics"), payload.get("nonfinite", [])
    if not isinstance(metrics, dict) or not isinstance(nonfinite, list):
        raise TelemetryError(f"{where}: a {payload['mode']} record needs a 'metrics' object (and a 'nonfinite' list)")
    out = {}
    for name, value in metrics.items():
        if value is None and name in nonfinite:
            out[name] = math.nan
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TelemetryError(f"{where}: metric {name!r} must be a number, got {value!r}")
        else:
            out[name] = float(value)
    return out


def read_log(path: Path | str) -> list[LogRecord]:
    """Every record of a ``logging.jsonl``, checked line by line (errors name ``file:line``)."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        return [decode_line(line, where=f"{path}:{n}") for n, line in enumerate(fh, 1) if line.strip()]


def last_per_step(records: Iterable[LogRecord]) -> list[LogRecord]:
    """One record per (mode, step), the last one written (a resumed run re-logs its first steps)."""
    latest: dict[tuple[str, int], LogRecord] = {}
    for r in records:
        latest.pop((r.mode, r.step), None)
        latest[(r.mode, r.step)] = r
    return sorted(latest.values(), key=lambda r: (r.step, MODES.index(r.mode)))


class Sink(Protocol):
    def write(self, record: LogRecord) -> None: ...

    def close(self) -> None: ...


class AppendLines:
    """An ``O_APPEND`` file written one whole line per ``os.write`` (logging.jsonl, rollouts.jsonl)."""

    def __init__(self, path: Path | str, *, fsync: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._fsync = fsync

    def append(self, data: bytes) -> None:
        if self._fd is None:
            raise TelemetryError(f"{self.path}: write after close")
        if not data.endswith(b"\n") or b"\n" in data[:-1]:
            raise TelemetryError(f"{self.path}: append takes exactly one line")
        written = os.write(self._fd, data)
        if written != len(data):
            raise TelemetryError(f"{self.path}: short write ({written} of {len(data)} bytes); the disk may be full")
        if self._fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class JsonlSink:
    """Appends records to ``logging.jsonl`` line-atomically (see the module docstring)."""

    def __init__(self, path: Path | str, *, fsync: bool = False) -> None:
        self._file = AppendLines(path, fsync=fsync)
        self.path = self._file.path
        self.nonfinite_values = 0  # values written as null since the sink opened

    def write(self, record: LogRecord) -> None:
        self._file.append(encode_line(record))
        self.nonfinite_values += len(record.nonfinite)

    def close(self) -> None:
        self._file.close()


class TensorBoardSink:
    """Scalars per metric at the record's step; meta records as a text summary.

    TensorBoard is a diagnostic: with a ``guard`` its write failures are counted
    (``telemetry/diagnostic_failures/tensorboard``) instead of stopping the run; logging.jsonl is not.
    """

    def __init__(self, log_dir: Path | str, *, guard: DiagnosticGuard | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self._writer = SummaryWriter(log_dir=str(self.log_dir))
        self._guard = guard

    def write(self, record: LogRecord) -> None:
        if self._guard is None:
            self._write(record)
        else:
            self._guard.run("tensorboard", self._write, record)

    def _write(self, record: LogRecord) -> None:
        if record.mode == "meta":
            self._writer.add_text("meta", json.dumps(dict(record.meta), sort_keys=True), global_step=record.step)
        else:
            for name, value in record.metrics.items():
                self._writer.add_scalar(name, value, global_step=record.step, walltime=record.time)
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()


class LogSinks:
    """Fan-out to several sinks, plus the "write meta only when it changed" rule."""

    def __init__(self, sinks: Sequence[Sink]) -> None:
        self.sinks = tuple(sinks)
        self._last_meta: dict[str, Any] | None = None

    def write(self, record: LogRecord) -> None:
        for sink in self.sinks:
            sink.write(record)

    def write_meta(self, step: int, meta: Mapping[str, Any], *, stamp: float | None = None) -> bool:
        """Log run constants (backend, versions, sampling) when they differ from the last ones logged."""
        meta = json.loads(json.dumps(dict(meta), sort_keys=True))
        if meta == self._last_meta:
            return False
        record = LogRecord("meta", step, meta=meta) if stamp is None else LogRecord("meta", step, meta=meta, time=stamp)
        self.write(record)
        self._last_meta = meta
        return True

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
