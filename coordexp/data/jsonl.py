"""The JSONL data contract (reference rollout §1.1-1.2): one line = one image sample, validated at the door.

A record is ``{"images": [...], "objects": [...], "width": W, "height": H}`` plus the optional
``summary`` and free-form ``metadata``; nothing else, so a misspelled ``objects`` is an error, not an
image without GT. An object is a ``desc`` plus exactly one geometry, ``bbox_2d`` ``[x1, y1, x2, y2]``
or ``poly`` (flat ``[x1, y1, x2, y2, ...]``, at least 3 vertices, optional ``poly_points``), in norm1000
bins written as ``"<|coord_k|>"`` tokens, ints 0..999, integral floats or decimal strings (the forms
``coordexp.core.coords.to_bin`` accepts). Pixel coordinates are converted offline, never here.

The whole file is checked before training starts: every bad line is reported with ``file:line`` and
the field (up to ``MAX_REPORTED`` of them in one error), so a long run never dies on line 90,000.

Rules this module adds to the legacy contract:
- A reversed box (``x2 < x1`` or ``y2 < y1``) is refused, not reordered. Match, the coord targets
  and the GT answer therefore all see the box the file holds, and a converter bug shows up at load
  time instead of as a silently flipped target. A zero-width or zero-height box is allowed.
- A desc holding a chat or coord special token (``<|im_end|>``, ``<|coord_5|>``, anything written
  ``<|...|>``) is refused: it would end the turn or read as a coordinate inside the answer.
- Unknown object keys and unknown record keys are refused (free-form data goes under ``metadata``).
- Image files must exist when the file is loaded (one ``stat`` each); they are decoded lazily.

There is no augmentation in coordexp, so coord tokens reach the answer exactly as loaded.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.coords import to_bins
from coordexp.data.records import Sample
from coordexp.errors import DataError

REQUIRED_FIELDS = ("images", "objects", "width", "height")
OPTIONAL_FIELDS = ("summary", "metadata")
OBJECT_KEYS = ("desc", "bbox_2d", "poly", "poly_points")
MAX_REPORTED = 20  # problems listed in one load error; the rest are counted
T = TypeVar("T")

# Substrings that would blur the JSON separators of the answer text (legacy JSONLinesBuilder rule).
_BAD_DESC_PARTS = ("\n", "\r", "\t", " ,", ", ", " /", "/ ", " :", ": ", "  ")
_SPECIAL_TOKEN = re.compile(r"<\|[^<>|]*\|>")


# --------------------------------------------------------------------------------------------------
# objects
# --------------------------------------------------------------------------------------------------


def gt_object_from_dict(obj: object, *, index: int, where: str) -> GTObject:
    """Validate one contract object and build its record; ``index`` is 1-based, ``where`` names the record."""
    at = f"{where}: objects[{index - 1}] (object_{index})"
    if not isinstance(obj, Mapping):
        raise DataError(f"{at}: an object must be a JSON object, got {type(obj).__name__}")
    _check_object_keys(obj, at)
    geoms = [g for g in GeomType if obj.get(g.value) is not None]
    if len(geoms) != 1:
        found = "both bbox_2d and poly" if geoms else "neither bbox_2d nor poly"
        raise DataError(f"{at}: exactly one geometry key is required, found {found}")
    desc = check_desc(obj.get("desc"), at)
    return GTObject(index=index, desc=desc, geom_type=geoms[0], points=_check_points(obj, geoms[0], at))


def _check_object_keys(obj: Mapping[str, object], at: str) -> None:
    if obj.get("line") is not None or obj.get("line_points") is not None:
        raise DataError(f"{at}: line geometry is not supported; use bbox_2d or poly")
    unknown = [k for k in obj if k not in OBJECT_KEYS]
    if unknown:
        raise DataError(f"{at}: unknown key(s) {_listing(unknown, OBJECT_KEYS)}; an object holds {', '.join(OBJECT_KEYS)}")
    if obj.get("poly_points") is not None and obj.get("poly") is None:
        raise DataError(f"{at}: poly_points belongs to a poly; remove it from this object")


def check_desc(desc: object, at: str) -> str:
    """A desc the answer text can carry verbatim: non-empty, one line, no separator look-alikes, no special tokens."""
    if not isinstance(desc, str) or not desc.strip():
        raise DataError(f"{at}: desc must be a non-empty string, got {desc!r}")
    special = _SPECIAL_TOKEN.search(desc)
    if special:
        raise DataError(
            f"{at}: desc {desc!r} holds the special token {special.group(0)!r}; it would end the answer or read "
            "as a coordinate. Remove it from the desc"
        )
    bad = [p for p in _BAD_DESC_PARTS if p in desc]
    if bad:
        raise DataError(
            f"{at}: desc {desc!r} contains {bad[0]!r}; descs may not hold newlines, tabs, double spaces "
            "or a space next to ',', '/' or ':' (they would blur the JSON separators)"
        )
    return desc


def _check_points(obj: Mapping[str, object], geom: GeomType, at: str) -> tuple[int, ...]:
    raw = obj[geom.value]
    if not isinstance(raw, list | tuple):
        raise DataError(f"{at}: {geom.value} must be a flat list, got {type(raw).__name__}")
    try:
        points = to_bins(raw)
    except ValueError as exc:
        raise DataError(
            f"{at}: {geom.value}: {exc} (coordinates are norm1000: coord tokens or integers 0..999 in a flat list; "
            "convert pixels offline)"
        ) from exc
    if geom is GeomType.BBOX:
        if len(points) != 4:
            raise DataError(f"{at}: bbox_2d needs 4 values [x1, y1, x2, y2], got {len(points)}")
        x1, y1, x2, y2 = points
        if x2 < x1 or y2 < y1:
            raise DataError(
                f"{at}: invalid bbox_2d {list(points)}: needs x1 <= x2 and y1 <= y2 (reversed boxes are refused, "
                "not reordered; write [min x, min y, max x, max y])"
            )
        return points
    if len(points) < 6 or len(points) % 2:
        raise DataError(f"{at}: poly needs an even number of values, at least 6 (3 vertices), got {len(points)}")
    declared = obj.get("poly_points")
    if declared is not None and (isinstance(declared, bool) or declared != len(points) // 2):
        raise DataError(f"{at}: poly_points={declared!r} but poly has {len(points) // 2} vertices")
    return points


def gt_objects(objects: object, *, where: str, bbox_only: bool = False) -> tuple[GTObject, ...]:
    """Every object of a record, in record order; the first bad object raises.

    ``bbox_only`` is the Stage-2 AB v1 rule (reference AB §0): any geometry other than ``bbox_2d``
    (``poly``, ``mask_rle``, ...) is refused as "bbox-only" before the general checks run.
    """
    if not isinstance(objects, list):
        raise DataError(f"{where}: 'objects' must be a list (it may be empty), got {type(objects).__name__}")
    if bbox_only:
        for i, obj in enumerate(objects):
            _check_bbox_only(obj, f"{where}: objects[{i}] (object_{i + 1})")
    return tuple(gt_object_from_dict(o, index=i, where=where) for i, o in enumerate(objects, start=1))


def _check_bbox_only(obj: object, at: str) -> None:
    if not isinstance(obj, Mapping):
        return  # gt_object_from_dict names the type
    extra = sorted(k for k, v in obj.items() if k not in ("desc", "bbox_2d") and v is not None)
    if extra or obj.get("bbox_2d") is None:
        found = ", ".join(extra) if extra else "no bbox_2d"
        raise DataError(f"{at}: Stage-2 AB is bbox-only v1; found {found}. Convert the object to a bbox_2d")


def check_size(record: Mapping[str, object], where: str) -> tuple[int, int]:
    """``(width, height)``: positive ints, the image's pixel size, needed to recover pixel boxes."""
    dims = []
    for dim in ("width", "height"):
        value = record.get(dim)
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            found = "it is missing" if dim not in record else f"got {value!r}"
            raise DataError(
                f"{where}: {dim} must be a positive int (the image's pixel size, needed for pixel recovery), "
                f"{found}; add the image's pixel size to the record"
            )
        dims.append(value)
    return dims[0], dims[1]


def gt_from_record(record: object, *, where: str, bbox_only: bool = False) -> tuple[GTObject, ...]:
    """The GT of one record without its images (``inspect --gt``): size and objects checked."""
    if not isinstance(record, Mapping):
        raise DataError(f"{where}: a record is one JSON object, got {type(record).__name__}")
    problems = _record_key_problems(record, where, required=("objects",))
    if problems:
        raise DataError(problems[0])
    check_size(record, where)
    return gt_objects(record["objects"], where=where, bbox_only=bbox_only)


# --------------------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------------------


def sample_from_record(record: object, *, source: str, sample_id: str, image_dir: Path) -> Sample:
    """One record as a ``Sample``; every problem of the record is in the one DataError raised."""
    sample, problems = _check_record(record, source=source, sample_id=sample_id, image_dir=image_dir)
    if sample is None:
        raise DataError("\n".join(problems))
    return sample


def _check_record(record: object, *, source: str, sample_id: str, image_dir: Path) -> tuple[Sample | None, list[str]]:
    where = f"{source} (sample {sample_id})"
    if not isinstance(record, Mapping):
        return None, [f"{where}: a record is one JSON object, got {type(record).__name__}"]
    problems = _record_key_problems(record, where)
    size = _attempt(problems, check_size, record, where)
    images = _attempt(problems, _resolve_images, record["images"], where, image_dir) if "images" in record else None
    objects: list[GTObject] = []
    if "objects" in record:
        raw = record["objects"]
        if isinstance(raw, list):
            for i, obj in enumerate(raw, start=1):
                objects.append(_attempt(problems, gt_object_from_dict, obj, index=i, where=where))
        else:
            _attempt(problems, gt_objects, raw, where=where)
    if problems:
        return None, problems
    extra = {k: record[k] for k in OPTIONAL_FIELDS if k in record}
    return Sample(sample_id, images, size[0], size[1], tuple(objects), source, extra), []


def _attempt(problems: list[str], fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
    """Run one independent check; its DataError becomes one listed problem (all are reported together)."""
    try:
        return fn(*args, **kwargs)
    except DataError as exc:
        problems.append(str(exc))
        return None


def _record_key_problems(
    record: Mapping[str, object], where: str, *, required: Sequence[str] = ("images", "objects")
) -> list[str]:
    """Unknown fields, and missing ``required`` ones (width and height are ``check_size``'s)."""
    known = REQUIRED_FIELDS + OPTIONAL_FIELDS
    unknown = [k for k in record if k not in known]
    missing = [k for k in required if k not in record]
    problems = []
    if missing:
        problems.append(f"{where}: missing required field(s) {', '.join(missing)}")
    if unknown:
        problems.append(
            f"{where}: unknown field(s) {_listing(unknown, known)}; a record holds {', '.join(known)} "
            "(put free-form data under metadata)"
        )
    return problems


def _listing(unknown: Sequence[str], known: Sequence[str]) -> str:
    """``'objets' (did you mean 'objects'?), 'foo'``: the close-match hint finds misspellings."""
    parts = []
    for key in unknown:
        close = difflib.get_close_matches(str(key), known, n=1, cutoff=0.7)
        parts.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
    return ", ".join(parts)


def _resolve_images(images: object, where: str, image_dir: Path) -> tuple[Path, ...]:
    """Absolute paths of the record's images; each must be an existing file now (a stat, no decode)."""
    if not isinstance(images, list) or not images:
        raise DataError(f"{where}: images must be a non-empty list of image paths, got {images!r}")
    out, missing = [], []
    for i, entry in enumerate(images):
        if not isinstance(entry, str) or not entry:
            raise DataError(f"{where}: images[{i}] must be a path string, got {entry!r}")
        path = Path(entry)
        path = path if path.is_absolute() else image_dir / path
        if not path.is_file():
            missing.append(f"images[{i}] {entry!r} -> {path}")
        out.append(path)
    if missing:
        raise DataError(
            f"{where}: image file(s) not found: {'; '.join(missing)}. Relative paths resolve against "
            f"{image_dir}; check custom.image_root (or the JSONL file's folder when it is unset)"
        )
    return tuple(out)


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------


def load_jsonl(path: str | Path, *, image_root: str | Path | None = None, limit: int | None = None) -> list[Sample]:
    """Every record of a JSONL file (the first ``limit`` when given), all validated before returning.

    Relative image paths resolve against ``image_root`` when given, else the JSONL file's folder.
    Blank lines are not records and are skipped. Sample ids are ``<file stem>#<record number>``
    (0-based), sources ``<file>:<line>``.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"JSONL file {path} does not exist (custom.train_jsonl / custom.val_jsonl)")
    image_dir = (Path(image_root) if image_root is not None else path.parent).resolve()
    samples: list[Sample] = []
    problems: list[str] = []
    bad_lines = 0
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if limit is not None and len(samples) + bad_lines >= limit:
                break
            record = _parse_line(raw, path, lineno, problems)
            if record is _BLANK:
                continue
            sid = f"{path.stem}#{len(samples) + bad_lines}"
            sample, found = (None, []) if record is _BAD else _check_record(
                record, source=f"{path}:{lineno}", sample_id=sid, image_dir=image_dir
            )
            problems.extend(found)
            if sample is None:
                bad_lines += 1
            else:
                samples.append(sample)
    if problems:
        raise DataError(_report(path, problems, bad_lines))
    if not samples:
        raise DataError(f"JSONL file {path} holds no records; a data file needs at least one sample")
    return samples


_BLANK, _BAD = object(), object()


def _parse_line(raw: bytes, path: Path, lineno: int, problems: list[str]) -> object:
    """The line's JSON value, ``_BLANK`` for an empty line, ``_BAD`` (problem recorded) when unreadable."""
    try:
        text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{path}:{lineno}: not valid UTF-8 (byte {exc.start}); save the file as UTF-8")
        return _BAD
    if not text.strip():
        return _BLANK
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{lineno}:{exc.colno}: not valid JSON ({exc.msg}); one record per line")
    except DataError as exc:  # from _no_duplicates
        problems.append(f"{path}:{lineno}: {exc}")
    return _BAD


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """Refuse a repeated key: ``json.loads`` would silently keep only the last one."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise DataError(f"duplicate key {key!r} in one JSON object; keep one")
        out[key] = value
    return out


def _report(path: Path, problems: list[str], bad_lines: int) -> str:
    shown = problems[:MAX_REPORTED]
    more = len(problems) - len(shown)
    tail = f"\n  ... and {more} more problem(s)" if more else ""
    body = "\n".join(f"  - {p}" for p in shown)
    return (
        f"{path}: {bad_lines} record(s) break the data contract ({len(problems)} problem(s)); fix them before "
        f"training:\n{body}{tail}"
    )
