"""The ``--gt FILE`` sections of ``python -m coordexp.inspect``: what one rollout teaches.

Given the rollout and the sample's GT record (one JSONL-contract line as a JSON file: ``objects``,
``width``, ``height``, ``images``), it runs prefix policy, Match and BuildTarget and adds two sections:

- ``match``: one row per prediction (key, desc, bins, matched GT, IoU or FP) and per unmatched GT (FN,
  with the key it is appended under);
- ``target``: ``Y_train`` as text with a marker line under each chunk, so one sees at a glance which
  characters are trained and how::

      ^ CE (tail structure, closing brace, EOS; matched-prefix structure in Stage-2 AB)
      ~ desc value, masked          d desc value with a CE weight
      c coord token with a target   . prefix context, unsupervised
      - tail token without CE (closure supervision switched off)

  followed, per chunk, by the coord targets (``position->bin``) that fall in it.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from coordexp.bind import PRESETS, bind_match, bind_prefix_policy, bind_target, tool_config
from coordexp.cli import load_json
from coordexp.core.coordjson import Layout, append_start_index
from coordexp.core.parse_records import Rollout
from coordexp.core.target import token_kinds
from coordexp.core.target_pipeline import TargetTrace, run_target_step
from coordexp.core.target_records import TargetSample
from coordexp.core.text import TokenText
from coordexp.core.tokens import TokenContext
from coordexp.data.jsonl import gt_from_record
from coordexp.errors import DataError

MARKS = {"ce": "^", "prefix_ce": "^", "desc_masked": "~", "desc_ce": "d", "coord_target": "c", "prefix": ".", "masked": "-"}
WIDTH = 100


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of the GT sections (``--gt`` turns them on)."""
    p.add_argument("--gt", help="JSON file with the sample's record (objects, width, height): adds match + target")
    p.add_argument("--preset", choices=tuple(PRESETS), default="rollout_matching",
                   help="BuildTarget switches (default rollout_matching)")
    p.add_argument("--prefix-policy", choices=("keep", "cut_at_first_invalid", "cut_at_first_duplicate"), default="keep")
    p.add_argument("--iou-mode", choices=("exact", "raster"), default="exact")


def load_record(path: str) -> dict[str, Any]:
    record = load_json(path, flag="--gt")
    if not isinstance(record, dict):
        raise DataError(f"{path}: a GT record is one JSON object (a JSONL line), got {type(record).__name__}")
    return record


def gt_sections(ids: list[int], args: argparse.Namespace, ctx: TokenContext) -> dict[str, Any]:
    """The ``match`` and ``target`` sections for ``--gt`` (plain data, like the parse section)."""
    config = tool_config(args.preset, iou_mode=args.iou_mode, prefix_policy=args.prefix_policy)
    cfg = bind_target(config)
    layout = Layout(args.layout)
    gt = gt_from_record(load_record(args.gt), where=args.gt, bbox_only=cfg.bbox_only)
    sample = TargetSample(Path(args.gt).stem, gt, layout)
    trace = run_target_step(
        Rollout(tuple(ids), sample_id=sample.sample_id),
        sample,
        ctx=ctx,
        match_cfg=bind_match(config),
        target_cfg=cfg,
        policy_cfg=bind_prefix_policy(config),
    )
    return {"match": match_section(trace, sample), "target": target_section(trace, ctx)}


def match_section(trace: TargetTrace, sample: TargetSample) -> dict[str, Any]:
    m, preds = trace.match, trace.view.parse.valid_objects
    pair = dict(m.matched_pairs)
    iou = dict(zip((p for p, _ in m.matched_pairs), m.matched_ious))
    excluded = {g for g in pair.values()} - set(trace.target.matched_gt_indices)
    rows = []
    for i, o in enumerate(preds):
        g = pair.get(i)
        status = "FP" if g is None else ("excluded" if g in excluded else "matched")
        rows.append({"pred": o.key, "desc": o.desc, "bins": list(o.coord_bins), "gt": g,
                     "gt_desc": None if g is None else sample.gt[g].desc,
                     "iou": None if g is None else round(iou[i], 3), "status": status})
    start = append_start_index(trace.view.parse.max_object_index)
    fn = [{"gt": g, "desc": sample.gt[g].desc, "geom": sample.gt[g].geom_type.value,
           "bins": list(sample.gt[g].points), "appended_as": f"object_{start + k}"}
          for k, g in enumerate(trace.target.fn_gt_indices)]
    cut = trace.view.cut
    return {"preds": rows, "fn": fn, "gating_rejections": m.gating_rejections,
            "prefix_cut": {"reason": cut.reason.value, "objects_cut": cut.objects_cut}}


def target_section(trace: TargetTrace, ctx: TokenContext) -> dict[str, Any]:
    t = trace.target
    text, marks = "", ""
    # merged pieces: a character split over byte tokens shows whole, marked by the token completing it
    for piece, kind in zip(TokenText.of(t.y_train_ids, ctx).token_texts(), token_kinds(t)):
        piece = piece.replace("\n", "↵")
        text += piece
        marks += MARKS[kind] * len(piece)
    return {"text": text, "marks": marks, "prefix_len": t.prefix_len, "append_len": t.append_len,
            "train_len": t.train_len, "coord_targets": _coord_chars(trace, ctx),
            "counters": {k: (v.value if hasattr(v, "value") else v) for k, v in _counters(t).items()}}


def _counters(t: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(t.counters, recurse=False)


def _coord_chars(trace: TargetTrace, ctx: TokenContext) -> list[list[int]]:
    """``[char offset, token position, bin, is_prefix]`` of every coord target, for the chunk lines."""
    t = trace.target
    out, offset, pos = [], 0, 0
    targets = {p: (b, pre) for p, b, pre in zip(t.coord_positions, t.coord_target_bins, t.coord_is_prefix)}
    for pos, piece in enumerate(TokenText.of(t.y_train_ids, ctx).token_texts()):
        if pos in targets:
            b, pre = targets[pos]
            out.append([offset, pos, b, int(pre)])
        offset += len(piece)
    return out


def render_match(view: dict[str, Any]) -> list[str]:
    lines = [f"prefix policy cut: {view['prefix_cut']['reason']} ({view['prefix_cut']['objects_cut']} objects); "
             f"gating rejections: {view['gating_rejections']}"]
    rows = [("pred", "desc", "bins", "status", "gt", "gt desc", "IoU")]
    for r in view["preds"]:
        rows.append((r["pred"], r["desc"], " ".join(map(str, r["bins"])), r["status"],
                     "" if r["gt"] is None else str(r["gt"]), r["gt_desc"] or "", "" if r["iou"] is None else f"{r['iou']:.3f}"))
    for f in view["fn"]:
        rows.append(("", "", "", f"FN -> {f['appended_as']}", str(f["gt"]), f["desc"], ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return lines


def render_target(view: dict[str, Any]) -> list[str]:
    legend = "marks: ^ CE  ~ desc masked  d desc CE  c coord target  . prefix (unsupervised)  - no CE"
    lines = [f"Y_train: prefix {view['prefix_len']} + append {view['append_len']} + EOS = {view['train_len']} tokens",
             legend]
    text, marks = view["text"], view["marks"]
    for start in range(0, len(text), WIDTH):
        lines += ["  " + text[start : start + WIDTH], "  " + marks[start : start + WIDTH]]
        inside = [c for c in view["coord_targets"] if start <= c[0] < start + WIDTH]
        if inside:
            lines.append("  c: " + " ".join(f"{pos}->{b}{'' if pre else '*'}" for _, pos, b, pre in inside)
                         + ("   (* = tail, own bin)" if any(not c[3] for c in inside) else ""))
    counters = ", ".join(f"{k}={v}" for k, v in view["counters"].items())
    lines.append(f"counters: {counters}")
    return lines


RENDERERS = {"match": render_match, "target": render_target}
