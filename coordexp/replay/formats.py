"""Recorded rollouts in every format the user has, detected from the file or folder, as ``ReplaySample`` rows.

- ``rollouts``: coordexp's own ``rollouts.jsonl`` (a run folder or the file): token ids, exact.
- ``gt_vs_pred``: the legacy inference file (``gt_vs_pred.jsonl`` / ``pred.jsonl``): GT and predictions in
  pixel space, ``raw_output_json`` the legacy's best-effort parsed dict. The raw text is not stored, so the
  completion is rebuilt from the dict (CoordJSON, slot values as emitted) and its last ``}`` is left off
  when the output did not end with ``<|im_end|>`` (cut by the budget): figures from it are estimates.
- ``vllm_debug``: the legacy vLLM server dumps, a folder of ``step_<step>_event_<n>.json`` with
  ``gt_text`` / ``rollout_text`` (texts clipped at ``max_chars`` end in ``...<truncated>``).
- ``monitor``: monitor dumps ``step_<step>.json``, coordexp's (``points``) and the legacy rollout-matching
  trainer's (``points_norm1000``).

Texts are tokenized with the replay's tokenizer (``TokenContext``); only ``rollouts`` carries the ids the
model generated. Anything that fits no format is a ``DataError`` naming the file and what was expected.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from coordexp.core.coordjson import GTObject, dumps, serialize
from coordexp.core.coords import pixels_to_bins
from coordexp.core.keys import GeomType
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.tokens import IM_END, TokenContext
from coordexp.errors import DataError
from coordexp.telemetry.recording import ROLLOUTS_FILE, read_rollouts

CLIPPED = "...<truncated>"  # suffix of a clipped dump text (legacy dumps and coordexp monitor dumps)
_VLLM_FILE = re.compile(r"^step_(\d{6,})_event_(\d{3,})\.json$")
_MONITOR_FILE = re.compile(r"^step_(\d{6,})(?:\.rank\d+)?\.json$")
FORMATS = ("rollouts", "gt_vs_pred", "vllm_debug", "monitor")
EXPECTED = (
    "a coordexp run folder or rollouts.jsonl, a legacy gt_vs_pred.jsonl / pred.jsonl, a folder of legacy vLLM "
    "debug dumps (step_<step:06d>_event_<n:03d>.json), or a folder of monitor dumps (step_<step:06d>.json)"
)


@attrs.frozen
class ReplaySample:
    """One recorded rollout, whatever its format, as the replay pipeline takes it."""

    sample_id: str
    step: int
    mode: str  # "train" | "eval"
    prompt_ids: tuple[int, ...] = attrs.field(converter=tuple)
    completion_ids: tuple[int, ...] = attrs.field(converter=tuple)
    finish_reason: str | None
    stop_rule: str | None
    source: str  # file:line or file#sample
    gt: tuple[GTObject, ...] | None = None  # None: the GT comes from the config's dataset (coordexp runs)
    image: str | None = None
    width: int = 0
    height: int = 0
    clipped: bool = False  # the dump clipped the text: what follows the clip is unknown
    legacy_valid_preds: int | None = None  # gt_vs_pred: the legacy's own count of valid predictions


@attrs.frozen
class ReplayInput:
    """The samples of one recording and what is known exactly about them."""

    format: str  # one of FORMATS
    path: Path
    samples: tuple[ReplaySample, ...] = attrs.field(converter=tuple)
    exact_text: bool  # the completions are the model's own token ids
    tokens_known: bool  # completion lengths are the generated counts (else re-tokenized estimates)
    run_dir: Path | None = None  # the run folder, when the input is a coordexp run's


@functools.lru_cache(maxsize=4)
def tokenizer_context(path: Path | None = None) -> TokenContext:
    """The replay's tokenizer (``--tokenizer``, default the fixture one), loaded once per folder and process."""
    from coordexp.data.tokenizer import fixture_tokenizer_path, load_tokenizer

    where = path if path is not None else fixture_tokenizer_path()
    return TokenContext.from_hf(load_tokenizer(where), name=str(Path(where).name))


def encode_text(text: str, ctx: TokenContext) -> tuple[int, ...]:
    """Token ids of a whole text; ``<|im_end|>`` becomes its one special token."""
    ids: list[int] = []
    parts = text.split(IM_END)
    for i, part in enumerate(parts):
        if part:
            ids.extend(ctx.encode(part))
        if i < len(parts) - 1:
            ids.append(ctx.im_end_id)
    return tuple(ids)


def read_input(path: Path | str, *, ctx: TokenContext) -> ReplayInput:
    """Detect the format of ``path`` and read it (see the module docstring)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"--rollouts {path}: no such file or folder; expected {EXPECTED}")
    if path.is_dir():
        return _read_dir(path, ctx)
    first = _first_json_line(path)
    if isinstance(first, dict) and "completion_ids" in first and "config_hash" in first:
        return ReplayInput("rollouts", path, _from_records(path), True, True, run_dir=path.parent)
    if isinstance(first, dict) and {"gt", "pred"} <= set(first):
        return ReplayInput("gt_vs_pred", path, _read_gt_vs_pred(path, ctx), False, False)
    if isinstance(first, dict) and "samples" in first:
        return _read_dump_files([path], ctx, path)
    raise DataError(f"{path}: not a recognised recording (first record has keys "
                    f"{sorted(first) if isinstance(first, dict) else type(first).__name__}); expected {EXPECTED}")


def _read_dir(path: Path, ctx: TokenContext) -> ReplayInput:
    if (path / ROLLOUTS_FILE).is_file():
        return ReplayInput("rollouts", path, _from_records(path / ROLLOUTS_FILE), True, True, run_dir=path)
    for name in ("gt_vs_pred.jsonl", "pred.jsonl"):
        if (path / name).is_file():
            return ReplayInput("gt_vs_pred", path / name, _read_gt_vs_pred(path / name, ctx), False, False)
    for sub in (path, path / "vllm_server_debug", path / "monitor_dumps"):
        files = sorted(p for p in sub.glob("step_*.json") if _VLLM_FILE.match(p.name) or _MONITOR_FILE.match(p.name))
        if files:
            return _read_dump_files(files, ctx, sub)
    raise DataError(f"{path}: no recording found in this folder; expected {EXPECTED}")


def _first_json_line(path: Path) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot be read as UTF-8 text ({exc}); expected {EXPECTED}") from exc
    try:
        return json.loads(text)  # a single JSON document (a dump file)
    except json.JSONDecodeError:
        pass
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                return json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not JSON ({exc.msg}); expected {EXPECTED}") from exc
    raise DataError(f"{path}: the file is empty; expected {EXPECTED}")


def _from_records(path: Path) -> list[ReplaySample]:
    out = []
    for n, rec in enumerate(read_rollouts(path), 1):
        out.append(ReplaySample(rec.sample_id, rec.step, rec.mode, rec.prompt_ids, rec.completion_ids,
                                rec.finish_reason, None if rec.stop_rule is None else rec.stop_rule.value,
                                f"{path}:{n}"))
    return out


# -- legacy gt_vs_pred.jsonl ---------------------------------------------------------------------------------
def _legacy_objects(items: object, *, width: int, height: int, where: str) -> tuple[GTObject, ...]:
    """``[{type, points, desc}]`` in pixels -> norm1000 objects (the spec's rounding rule, core.coords)."""
    if not isinstance(items, list):
        raise DataError(f"{where}: expected a list of {{type, points, desc}} objects, got {type(items).__name__}")
    out = []
    for i, obj in enumerate(items):
        if not isinstance(obj, dict) or "points" not in obj:
            raise DataError(f"{where}[{i}]: expected {{type, points, desc}}, got {obj!r}"[:300])
        kind = {"bbox_2d": GeomType.BBOX, "bbox": GeomType.BBOX, "poly": GeomType.POLY}.get(str(obj.get("type")))
        if kind is None:
            raise DataError(f"{where}[{i}]: type {obj.get('type')!r} is not bbox_2d or poly")
        try:
            bins = pixels_to_bins([float(v) for v in obj["points"]], width=width, height=height)
        except (TypeError, ValueError) as exc:
            raise DataError(f"{where}[{i}]: points {obj['points']!r} are not pixel points inside "
                            f"{width}x{height} ({exc})"[:400]) from exc
        out.append(GTObject(i + 1, str(obj.get("desc") or ""), kind, bins))
    return tuple(out)


def _legacy_text(row: Mapping[str, Any], preds: Sequence[GTObject]) -> str:
    """The completion rebuilt from the legacy parsed dict (slot values as emitted), else from the kept preds."""
    raw = row.get("raw_output_json")
    text = dumps(raw) if isinstance(raw, dict) else (serialize(preds) if preds else "")
    if text and not row.get("raw_ends_with_im_end", True):
        return text[:-1]  # cut by the budget: the closing brace was never generated
    return text + IM_END if row.get("raw_ends_with_im_end", True) else text


def _read_gt_vs_pred(path: Path, ctx: TokenContext) -> list[ReplaySample]:
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: not a JSON line ({exc.msg})") from exc
        missing = [k for k in ("width", "height", "gt", "pred") if k not in row]
        if missing:
            raise DataError(f"{where}: missing {missing}; a gt_vs_pred line has image, width, height, gt, pred, "
                            "raw_output_json, raw_ends_with_im_end")
        w, h = int(row["width"]), int(row["height"])
        gt = _legacy_objects(row["gt"], width=w, height=h, where=f"{where}: gt")
        preds = _legacy_objects(row["pred"], width=w, height=h, where=f"{where}: pred")
        ids = encode_text(_legacy_text(row, preds), ctx)
        ended = bool(row.get("raw_ends_with_im_end", True))
        out.append(ReplaySample(f"{row.get('image') or path.name}#{n}", 0, "eval", (), ids,
                                "stop" if ended else "length", None, where, gt=gt, image=row.get("image"), width=w,
                                height=h, legacy_valid_preds=len(preds)))
    if not out:
        raise DataError(f"{path}: no records; expected one JSON object per line with gt and pred")
    return out


# -- dump folders (legacy vLLM debug, monitor dumps) -----------------------------------------------------------
def _unclip(text: object, where: str) -> tuple[str, bool]:
    if not isinstance(text, str):
        raise DataError(f"{where}: expected a text, got {type(text).__name__}")
    return (text[: -len(CLIPPED)], True) if text.endswith(CLIPPED) else (text, False)


def _gt_from_text(text: str, ctx: TokenContext, where: str) -> tuple[GTObject, ...]:
    """The GT answer text of a vLLM dump, parsed strictly (the GT is always valid CoordJSON)."""
    pr = parse(Rollout(encode_text(text, ctx), sample_id=where), ctx=ctx)
    if pr.dropped or pr.truncated:
        raise DataError(f"{where}: gt_text is not a complete CoordJSON answer ({pr.n_dropped} objects dropped"
                        f"{', truncated' if pr.truncated else ''}); the GT of a dump must parse")
    return tuple(GTObject(i + 1, o.desc, o.geom_type, o.coord_bins) for i, o in enumerate(pr.valid_objects))


def _monitor_gt(rows: object, where: str) -> tuple[GTObject, ...]:
    if not isinstance(rows, list):
        raise DataError(f"{where}: gt_objects must be a list")
    out = []
    for i, g in enumerate(rows):
        points = g.get("points", g.get("points_norm1000")) if isinstance(g, dict) else None
        if points is None:
            raise DataError(f"{where}: gt_objects[{i}] has no points / points_norm1000")
        out.append(GTObject(i + 1, str(g.get("desc", "")), GeomType(g.get("geom_type", "bbox_2d")),
                            tuple(int(v) for v in points)))
    return tuple(out)


def _read_dump_files(files: Sequence[Path], ctx: TokenContext, where_dir: Path) -> ReplayInput:
    samples: list[ReplaySample] = []
    kinds = set()
    for path in files:
        try:
            payload = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{path}: not a JSON dump ({exc}); expected {EXPECTED}") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("samples"), list):
            raise DataError(f"{path}: a dump is an object with a 'samples' list; expected {EXPECTED}")
        step = int(payload.get("global_step", 0))
        for i, s in enumerate(payload["samples"]):
            where = f"{path}#{i}"
            if not isinstance(s, dict) or "rollout_text" not in s:
                raise DataError(f"{where}: a dump sample has rollout_text (and gt_text or gt_objects)")
            text, clipped = _unclip(s["rollout_text"], f"{where}: rollout_text")
            if "gt_text" in s:
                kinds.add("vllm_debug")
                gt = _gt_from_text(_unclip(s["gt_text"], f"{where}: gt_text")[0], ctx, where)
                sid = f"{path.stem}#{i}"
            elif "gt_objects" in s:
                kinds.add("monitor")
                gt = _monitor_gt(s["gt_objects"], where)
                sid = str(s.get("sample_id") or f"{path.stem}#{i}")
            else:
                raise DataError(f"{where}: a dump sample needs gt_text (vLLM debug dump) or gt_objects (monitor dump)")
            ids = encode_text(text, ctx)
            samples.append(ReplaySample(sid, step, "train", (), ids, None, None, where, gt=gt,
                                        image=s.get("image"), width=int(s.get("width") or 0),
                                        height=int(s.get("height") or 0), clipped=clipped))
    if not samples:
        raise DataError(f"{where_dir}: the dumps hold no samples; expected {EXPECTED}")
    if len(kinds) != 1:
        raise DataError(f"{where_dir}: mixes vLLM debug dumps and monitor dumps; replay one kind at a time")
    return ReplayInput(kinds.pop(), where_dir, samples, False, False)
