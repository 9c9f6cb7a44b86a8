"""Rollout recording: ``rollouts.jsonl``, one line per rollout, the input of offline replay.

A line holds what a backend returned, token-in / token-out, so that replay runs the same pure
transitions without a model and never re-tokenizes text::

    {"format_version": 1, "config_hash": "3f0c9a1e5b7d2c48", "step": 12, "mode": "train",
     "sample_id": "train.jsonl:7", "prompt_ids": [...], "completion_ids": [...],
     "finish_reason": "stop", "stop_rule": null}

``config_hash`` identifies the resolved config that produced the rollout (``config_hash``); a replay
under another config is refused by ``read_rollouts(..., expect_hash=...)`` unless it asks for none.
Each rank records its own rollouts: rank 0 writes ``rollouts.jsonl``, rank r ``rollouts.rank<r>.jsonl``.
Lines are written whole, by one ``os.write`` each, so a crash leaves complete lines.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import yaml

from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import StopRule
from coordexp.errors import DataError
from coordexp.telemetry.sinks import AppendLines

FORMAT_VERSION = 1
ROLLOUTS_FILE = "rollouts.jsonl"
_HASH_RE = re.compile(r"^[0-9a-f]{16}$")
_FIELDS = ("format_version", "config_hash", "step", "mode", "sample_id", "prompt_ids", "completion_ids",
           "finish_reason", "stop_rule")
MODES = ("train", "eval")


def config_hash(resolved_yaml_text: str) -> str:
    """16 hex digits of SHA-256 over the config's canonical JSON (key order, comments, spacing don't count)."""
    try:
        data = yaml.safe_load(resolved_yaml_text)
    except yaml.YAMLError as exc:
        raise DataError(f"config_hash: the resolved config is not YAML: {exc}") from exc
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def rollouts_path(run_dir: Path | str, rank: int = 0) -> Path:
    name = ROLLOUTS_FILE if rank == 0 else f"rollouts.rank{rank}.jsonl"
    return Path(run_dir) / name


@attrs.frozen
class RolloutRecord:
    """One recorded rollout."""

    sample_id: str
    step: int  # optimizer step (train) or the step after which the evaluation ran (eval)
    prompt_ids: tuple[int, ...] = attrs.field(converter=tuple)
    completion_ids: tuple[int, ...] = attrs.field(converter=tuple)
    finish_reason: str | None
    stop_rule: StopRule | None = attrs.field(converter=attrs.converters.optional(StopRule))
    config_hash: str
    mode: str = "train"
    format_version: int = FORMAT_VERSION

    def rollout(self) -> Rollout:
        """The core record Parse takes, as the live backend returned it."""
        return Rollout(self.completion_ids, self.prompt_ids, self.finish_reason, self.sample_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version, "config_hash": self.config_hash, "step": self.step,
            "mode": self.mode, "sample_id": self.sample_id, "prompt_ids": list(self.prompt_ids),
            "completion_ids": list(self.completion_ids), "finish_reason": self.finish_reason,
            "stop_rule": None if self.stop_rule is None else self.stop_rule.value,
        }


class RolloutRecorder:
    """Appends every rollout of a run (``record_rollouts: true``) to its rank's recording file."""

    def __init__(self, path: Path | str, *, config_hash: str) -> None:
        if not _HASH_RE.match(config_hash):
            raise DataError(f"RolloutRecorder: config_hash must be 16 hex digits (config_hash()), got {config_hash!r}")
        self.config_hash = config_hash
        self._file = AppendLines(path)
        self.path = self._file.path
        self.written = 0

    def record(self, *, sample_id: str, step: int, prompt_ids: Sequence[int], completion_ids: Sequence[int],
               finish_reason: str | None, stop_rule: StopRule | str | None, mode: str = "train") -> RolloutRecord:
        rec = RolloutRecord(sample_id, step, prompt_ids, completion_ids, finish_reason, stop_rule, self.config_hash,
                            mode)
        _check(rec.to_json(), where=f"{self.path} (record of sample {sample_id})")
        line = json.dumps(rec.to_json(), separators=(",", ":"), ensure_ascii=False) + "\n"
        self._file.append(line.encode("utf-8"))
        self.written += 1
        return rec

    def close(self) -> None:
        self._file.close()


def _ids(value: object, field: str, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
        raise DataError(f"{where}: {field!r} must be a list of token ids (integers >= 0)")
    return tuple(value)


def _check(payload: object, *, where: str) -> RolloutRecord:
    """Validate one decoded line (every field, exact key set) and build its record."""
    if not isinstance(payload, dict):
        raise DataError(f"{where}: a recording line is a JSON object, got {type(payload).__name__}")
    missing, extra = sorted(set(_FIELDS) - set(payload)), sorted(set(payload) - set(_FIELDS))
    if missing or extra:
        raise DataError(f"{where}: fields missing {missing} / unknown {extra}; a line has exactly {', '.join(_FIELDS)}")
    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version != FORMAT_VERSION:
        raise DataError(f"{where}: format_version {version!r} is not supported; this coordexp reads {FORMAT_VERSION}")
    step = payload["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise DataError(f"{where}: 'step' must be an integer >= 0, got {step!r}")
    for field in ("sample_id", "config_hash"):
        if not isinstance(payload[field], str) or not payload[field]:
            raise DataError(f"{where}: {field!r} must be a non-empty string")
    if not _HASH_RE.match(payload["config_hash"]):
        raise DataError(f"{where}: 'config_hash' must be 16 hex digits, got {payload['config_hash']!r}")
    if payload["mode"] not in MODES:
        raise DataError(f"{where}: 'mode' must be one of {', '.join(MODES)}, got {payload['mode']!r}")
    if payload["finish_reason"] is not None and not isinstance(payload["finish_reason"], str):
        raise DataError(f"{where}: 'finish_reason' must be a string or null")
    rule = payload["stop_rule"]
    if rule is not None and rule not in {r.value for r in StopRule}:
        raise DataError(f"{where}: 'stop_rule' {rule!r} is not one of {', '.join(r.value for r in StopRule)}")
    return RolloutRecord(payload["sample_id"], step, _ids(payload["prompt_ids"], "prompt_ids", where),
                         _ids(payload["completion_ids"], "completion_ids", where), payload["finish_reason"], rule,
                         payload["config_hash"], payload["mode"], version)


def read_rollouts(path: Path | str, *, expect_hash: str | None = None) -> list[RolloutRecord]:
    """Every record of a recording, validated line by line; errors name ``file:line`` and the field.

    ``expect_hash`` (the replaying run's ``config_hash``) refuses rollouts recorded under another config.
    """
    path = Path(path)
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            where = f"{path}:{n}"
            if not line.strip():
                continue
            if not line.endswith("\n"):
                raise DataError(f"{where}: incomplete last line (the recording run stopped mid-write); delete it")
            try:
                payload = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not a JSON line ({exc.msg} at column {exc.colno})") from exc
            rec = _check(payload, where=where)
            if expect_hash is not None and rec.config_hash != expect_hash:
                raise DataError(
                    f"{where}: recorded under config {rec.config_hash}, this run's config is {expect_hash}; "
                    "replay with the config that recorded it (its run folder's config.yaml)"
                )
            out.append(rec)
    return out
