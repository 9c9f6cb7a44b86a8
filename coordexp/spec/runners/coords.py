"""Runner for ``coords``: the coord codec, one operation per case.

Input: one case or ``{"cases": [case, ...]}``; a case is ``{"op": NAME, ...params}``:
- ``token_to_bin`` {value}; ``bin_to_token`` {bin}; ``bin_to_float`` {bin}; ``float_to_bin`` {value};
- ``to_bins`` {values}: a mixed list of coord tokens, ints and integral numbers;
- ``vocab_mask`` {vocab_size, probe}: the coord-vocab mask of the char tokenizer (coord ids 0..999)
  over ``vocab_size`` ids, summarised (count, first/last True id, the values at ``probe`` ids);
- ``annotate_record`` {record}: a JSONL record -> its objects' bins and k/999 norms;
- ``pixels_to_bins`` {points, width, height}: the offline converter's rounding rule;
- ``bins_to_pixels`` {values, width, height}: the evaluator's denormalisation (tokens or ints);
- ``answer_ids`` {records, tokenizer, orderings: [{ordering, seed?, epoch?}]}: the records written as a JSONL
  file (with blank images of their size beside it) and loaded by ``data.jsonl.load_jsonl``; per sample and
  ordering, the GT answer ids of ``data.prompts.gt_answer_ids`` under the ``char`` or ``fixture-bpe``
  tokenizer, read back by the strict parser (``core.parse``): objects, their bins, and whether every coord
  value is one coord-token id equal to the loaded bin.
Each case yields its result or its expected error; floats are rounded to 9 decimals. A malformed
case (unknown op, missing or extra parameter) is a TypeError: a broken fixture, not a scenario.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from coordexp.core import coords
from coordexp.core.tokens import char_context
from coordexp.data.jsonl import gt_from_record
from coordexp.errors import CoordexpError
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "coords"


def _token_to_bin(*, value: str) -> dict[str, Any]:
    k = coords.parse_coord_token(value)
    if k is None:
        raise ValueError(f"not a coord token in 0..{coords.MAX_BIN}: {value!r}")
    return {"bin": k}


def _vocab_mask(*, vocab_size: int, probe: list[int]) -> dict[str, Any]:
    mask = coords.coord_vocab_mask(char_context().coord_ids, vocab_size)
    true_ids = [i for i, on in enumerate(mask) if on]
    return {
        "size": len(mask),
        "num_true": len(true_ids),
        "first_true": true_ids[0] if true_ids else None,
        "last_true": true_ids[-1] if true_ids else None,
        "probe": {str(i): mask[i] for i in probe},
    }


def _annotate_record(*, record: dict[str, Any]) -> dict[str, Any]:
    objs = gt_from_record(record, where="fixture record")
    return {
        "objects": [
            {
                "index": o.index,
                "geom_type": o.geom_type.value,
                "bins": list(o.points),
                "norm": [round(coords.bin_to_float(k), 9) for k in o.points],
            }
            for o in objs
        ]
    }


def _pixels_to_bins(*, points: list[float], width: int, height: int) -> dict[str, Any]:
    bins = coords.pixels_to_bins(points, width=width, height=height)
    return {"bins": list(bins), "tokens": [coords.coord_token(k) for k in bins]}


def _bins_to_pixels(*, values: list[Any], width: int, height: int) -> dict[str, Any]:
    return {"pixels": list(coords.bins_to_pixels(coords.to_bins(values), width=width, height=height))}


def _answer_ids(*, records: list[dict[str, Any]], tokenizer: str, orderings: list[dict[str, Any]]) -> dict[str, Any]:
    import json
    import tempfile
    from pathlib import Path

    from PIL import Image

    from coordexp.data.jsonl import load_jsonl

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for rec in records:
            for name in rec.get("images", []):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                Image.new("RGB", (rec["width"], rec["height"])).save(folder / name)
        path = folder / "data.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        samples = load_jsonl(path)
    ctx = _context(tokenizer)
    return {"samples": [
        {"sample": s.sample_id, "written": [_written(o) for o in rec["objects"]],
         "orderings": [_answer_of(s, o, ctx) for o in orderings]}
        for s, rec in zip(samples, records, strict=True)
    ]}


def _context(tokenizer: str) -> Any:
    if tokenizer == "char":
        return char_context()
    if tokenizer == "fixture-bpe":
        from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context

        return load_token_context(fixture_tokenizer_path())
    raise TypeError(f"answer_ids tokenizer must be 'char' or 'fixture-bpe', got {tokenizer!r}")


def _written(obj: dict[str, Any]) -> dict[str, Any]:
    geom = "bbox_2d" if "bbox_2d" in obj else "poly"
    return {"desc": obj["desc"], geom: obj[geom]}


def _answer_of(sample: Any, how: dict[str, Any], ctx: Any) -> dict[str, Any]:
    from coordexp.core.parse import parse
    from coordexp.core.parse_records import Rollout
    from coordexp.data.prompts import gt_answer_ids
    from coordexp.data.records import order_objects

    ordering, seed, epoch = how["ordering"], how.get("seed"), how.get("epoch", 0)
    ids = gt_answer_ids(sample, ordering, ctx=ctx, seed=seed, epoch=epoch)
    read = parse(Rollout(ids, sample_id=sample.sample_id), ctx=ctx).valid_objects
    ordered = order_objects(sample, ordering, seed=seed, epoch=epoch)
    coord_ids = [i for i in ids if ctx.is_coord(i)]
    want = [ctx.coord_ids[k] for o in ordered for k in o.points]
    return {
        **how,
        "answer": ctx.text_of(ids),
        "read_back": [{"desc": o.desc, o.geom_type.value: list(o.coord_bins)} for o in read],
        "coord_ids_are_the_loaded_bins": coord_ids == want,
        "same_objects_as_loaded": sorted(_key(o.desc, o.geom_type, o.coord_bins) for o in read)
        == sorted(_key(o.desc, o.geom_type, o.points) for o in sample.objects),
    }


def _key(desc: str, geom: Any, bins: tuple[int, ...]) -> tuple[str, str, tuple[int, ...]]:
    return (desc, geom.value, tuple(bins))


_OPS: dict[str, Callable[..., dict[str, Any]]] = {
    "token_to_bin": _token_to_bin,
    "bin_to_token": lambda *, bin: {"token": coords.coord_token(bin)},
    "bin_to_float": lambda *, bin: {"float": round(coords.bin_to_float(bin), 9)},
    "float_to_bin": lambda *, value: {"bin": coords.float_to_bin(value)},
    "to_bins": lambda *, values: {"bins": list(coords.to_bins(values))},
    "vocab_mask": _vocab_mask,
    "annotate_record": _annotate_record,
    "pixels_to_bins": _pixels_to_bins,
    "bins_to_pixels": _bins_to_pixels,
    "answer_ids": _answer_ids,
}


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    params = dict(case)
    op = params.pop("op", None)
    if op not in _OPS:
        raise TypeError(f"coords case needs 'op' in {sorted(_OPS)}, got {op!r}")
    try:
        result = _OPS[op](**params)
    except (CoordexpError, ValueError) as exc:
        result = expected_error(exc)
    return {"op": op, **result}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
