"""``python -m coordexp.inspect``: show how one rollout parses.

    python -m coordexp.inspect --text '{"object_1": {...}}'  [--tokenizer char|fixture|PATH] [--json]
    python -m coordexp.inspect --ids 1,2,3
    python -m coordexp.inspect --file rollout.txt [--layout objects_array]

It prints where the prefix was cut, the valid objects (key, desc, geometry, bins, coord token
positions), the drops with their reasons, truncation and any fallback: the questions one asks when
a training step reports odd parse metrics. The report is a list of sections (``parse`` today), each
built as plain data and rendered as text or JSON, so a later ``--gt FILE`` can add ``match`` and
``target`` sections (match table, Y_train masks) without touching the parse section.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from coordexp import inspect_gt
from coordexp.cli import check_utf8, int_list, read_text
from coordexp.core.coordjson import Layout
from coordexp.core.parse import parse
from coordexp.core.parse_records import ParseResult, Rollout
from coordexp.core.tokens import TokenContext, char_context
from coordexp.errors import CoordexpError, TokenizerError


def parse_view(result: ParseResult, ctx: TokenContext) -> dict[str, Any]:
    """Plain-data view of a ParseResult: what a reviewer reads (also the parse scenarios' output)."""
    return {
        "response_text": result.response_text,
        "response_len": len(result.response_ids),
        "prefix_text": result.prefix_text,
        "prefix_len": len(result.prefix_ids),
        "prefix_tail_pieces": [ctx.piece(i) for i in result.prefix_ids[-3:]],
        "cut_retokenized": result.cut_retokenized,
        "valid": [
            {
                "key": o.key,
                "index": o.index,
                "desc": o.desc,
                "geom_type": o.geom_type,
                "coord_bins": list(o.coord_bins),
                "coord_token_indices": list(o.coord_token_indices),
            }
            for o in result.valid_objects
        ],
        "dropped": [{"key": d.key, "index": d.index, "reason": d.reason.value} for d in result.dropped],
        "dropped_by_reason": {r.value: n for r, n in result.dropped_by_reason.items() if n},
        "truncated": result.truncated,
        "max_object_index": result.max_object_index,
        "fallback": result.fallback.value,
        "im_end": result.im_end.value,
    }


def resolve_context(choice: str | None) -> tuple[str, TokenContext]:
    """(label, context) for ``char``, ``fixture`` (the committed tiny BPE tokenizer) or a directory.

    With no choice: the fixture tokenizer when it is present, else the char tokenizer.
    """
    if choice == "char":
        return "char", char_context()
    from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context

    if choice in (None, "fixture"):
        try:
            return "fixture", load_token_context(fixture_tokenizer_path())
        except TokenizerError as exc:
            if choice == "fixture":
                raise TokenizerError(f"--tokenizer fixture: {exc}") from exc
            return "char", char_context()
    try:
        return choice, load_token_context(check_utf8(choice, flag="--tokenizer"))
    except TokenizerError as exc:
        raise TokenizerError(f"--tokenizer {choice}: {exc}; give char, fixture or a tokenizer directory") from exc


def _rollout_ids(args: argparse.Namespace, ctx: TokenContext) -> list[int]:
    """The rollout ids from --ids, --text or --file; every bad input is a DataError naming its flag."""
    if args.ids is not None:
        return int_list(args.ids, flag="--ids", low=0, high=ctx.vocab_size)
    text = check_utf8(args.text, flag="--text") if args.text is not None else read_text(args.file, flag="--file")
    return list(ctx.encode(text))


def parse_section(result: ParseResult, ctx: TokenContext) -> dict[str, Any]:
    """The parse section: the scenario view plus spans, for locating objects in the text."""
    view = parse_view(result, ctx)
    data = ctx.bytes_of(result.response_ids)  # spans are byte offsets (a character may span tokens)
    for entry, obj in zip(view["valid"], result.valid_objects):
        entry["value_span"] = list(obj.value_span)
    for entry, obj in zip(view["dropped"], result.dropped):
        entry["value_span"] = list(obj.value_span)
        entry["text"] = data[obj.value_span[0] : obj.value_span[1]].decode("utf-8", errors="replace")
    return view


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "…" + text[-(width - 1) :]


def render_parse(view: dict[str, Any]) -> list[str]:
    """Readable text for the parse section."""
    cut = len(view["prefix_text"])
    lines = [
        f"response: {view['response_len']} tokens, {len(view['response_text'])} chars (im_end: {view['im_end']})",
        f"prefix:   {view['prefix_len']} tokens, cut at char {cut}; fallback: {view['fallback']}; "
        f"re-encoded tail tokens: {view['cut_retokenized']}",
        f"  kept  : {_clip(view['prefix_text'], 70)!r}",
        f"  cut off: {view['response_text'][cut:][:70]!r}" if view["fallback"] == "none" else "  (prefix is a fallback)",
        f"truncated: {'yes' if view['truncated'] else 'no'}; max object index in prefix: {view['max_object_index']}",
        "",
        f"valid objects ({len(view['valid'])})",
    ]
    rows = [("key", "index", "desc", "geometry", "bins", "coord token idx")]
    for o in view["valid"]:
        rows.append((o["key"], str(o["index"]), o["desc"], o["geom_type"], " ".join(map(str, o["coord_bins"])),
                     ",".join(map(str, o["coord_token_indices"]))))
    lines += _table(rows)
    lines += ["", f"dropped objects ({len(view['dropped'])})"]
    drop_rows = [("key", "index", "reason", "value text")]
    drop_rows += [(d["key"], str(d["index"]), d["reason"], _clip(d["text"], 60)) for d in view["dropped"]]
    lines += _table(drop_rows)
    by_reason = ", ".join(f"{k}={v}" for k, v in view["dropped_by_reason"].items()) or "none"
    lines.append(f"drops by reason: {by_reason}")
    return lines


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    if len(rows) == 1:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


RENDERERS = {"parse": render_parse, **inspect_gt.RENDERERS}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m coordexp.inspect", description="Show how one rollout parses.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="rollout text (encoded with the tokenizer)")
    src.add_argument("--ids", help="comma-separated token ids, exactly as the backend returned them")
    src.add_argument("--file", help="a file holding the rollout text")
    p.add_argument("--tokenizer", help="char | fixture | a tokenizer directory (default: fixture if present, else char)")
    p.add_argument("--layout", choices=[lay.value for lay in Layout], default=Layout.OBJECT_N.value)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    inspect_gt.add_arguments(p)
    return p


def _negative_ids_as_values(argv: Sequence[str]) -> list[str]:
    """``--ids -1,5`` -> ``--ids=-1,5``: argparse would take ``-1,5`` for an option and report a missing value,
    while the real problem (a negative token id) deserves its own message."""
    out, rest = [], list(argv)
    while rest:
        arg = rest.pop(0)
        if arg == "--ids" and rest and rest[0][:1] == "-" and rest[0][1:2].isdigit():
            arg = f"--ids={rest.pop(0)}"
        out.append(arg)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_negative_ids_as_values(sys.argv[1:] if argv is None else argv))
    try:
        label, ctx = resolve_context(args.tokenizer)
        ids = _rollout_ids(args, ctx)
        result = parse(Rollout(tuple(ids)), ctx=ctx, layout=Layout(args.layout))
        extra = inspect_gt.gt_sections(ids, args, ctx) if args.gt else {}
    except (CoordexpError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except RecursionError:  # the parse of a pathologically nested rollout; the input is at fault, not the tool
        print("error: the rollout is nested too deeply to inspect", file=sys.stderr)
        return 2
    report = {"tokenizer": label, "layout": args.layout, "sections": {"parse": parse_section(result, ctx), **extra}}
    if args.json:
        print(json.dumps(report, ensure_ascii=False, indent=2))
        return 0
    print(f"tokenizer: {report['tokenizer']}  layout: {report['layout']}")
    for name, view in report["sections"].items():
        print(f"\n== {name}")
        print("\n".join(RENDERERS[name](view)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
