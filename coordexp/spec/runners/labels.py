"""Runner for ``labels``: synthetic segments (reference 14.5) -> row labels and coord supervision.

Input::

    {"coord_ids": {"10": 10, "20": 20},            (token id -> bin)
     "segments": [{"ids": [...],                    (this segment's tokens: prompt, assistant, suffix)
                   "prompt_len": 5, "prefix_len": 3, "train_len": 6,
                   "eos_id": 0,                     (optional: the token after Y_train is the EOS; it
                                                     joins the supervised tail, as BuildTarget does)
                   "prefix_coord": [[1, 123]],      (assistant-local position, target bin)
                   "tail_ignore": [0, 2],           (tail-relative)
                   "encoded_len": 12,               (optional, default len(ids))
                   "rollout_prompt_ids": [...]}],   (optional: checked against the row's prompt)
     "row": [...]}                                  (optional, default: the segments' ids concatenated)

Output: the row's labels, weights (only when some differ from 0/1), coord supervision as
``[position, bin, is_prefix, segment]``, offsets; with several segments also each segment's labels
alone and whether their concatenation equals the packed labels.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.labels import RowLabels, Segment, assistant_labels, row_labels
from coordexp.errors import SpecError

TRANSITION = "labels"

_SEG_KEYS = {"ids", "prompt_len", "prefix_len", "train_len", "eos_id", "prefix_coord", "tail_ignore",
             "encoded_len", "rollout_prompt_ids", "sample_id"}


def _segment(data: dict[str, Any], coord_map: dict[int, int], index: int) -> Segment:
    unknown = set(data) - _SEG_KEYS
    if unknown:
        raise SpecError(f"labels fixture segment {index}: unknown keys {sorted(unknown)}")
    ids, prompt_len, train_len = list(data["ids"]), data["prompt_len"], data["train_len"]
    if "eos_id" in data:
        if ids[prompt_len + train_len] != data["eos_id"]:
            raise SpecError(f"labels fixture segment {index}: the token after Y_train is not eos_id {data['eos_id']}")
        train_len += 1
    sid = data.get("sample_id", f"seg{index}")
    labels = assistant_labels(
        ids[prompt_len : prompt_len + train_len],
        prefix_len=data["prefix_len"],
        coord_id_to_bin=coord_map,
        prefix_coord=[tuple(pc) for pc in data.get("prefix_coord", [])],
        tail_ignore=data.get("tail_ignore", []),
        sample_id=sid,
    )
    return Segment(
        prompt_len=prompt_len,
        encoded_len=data.get("encoded_len", len(ids)),
        labels=labels,
        rollout_prompt_ids=data.get("rollout_prompt_ids"),
        sample_id=sid,
    )


def _row_data(row: RowLabels) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": list(row.labels),
        "coord": [list(c) for c in zip(row.coord_positions, row.coord_bins, row.coord_is_prefix, row.coord_segment)],
        "offsets": list(row.offsets),
    }
    if any(w not in (0.0, 1.0) for w in row.weights):
        out["weights"] = list(row.weights)
    return out


def run(data: dict[str, Any]) -> Any:
    if set(data) - {"coord_ids", "segments", "row"}:
        raise SpecError(f"labels fixture: unknown keys {sorted(set(data) - {'coord_ids', 'segments', 'row'})}")
    coord_map = {int(k): int(v) for k, v in data["coord_ids"].items()}
    seg_data = data["segments"]
    segments = [_segment(s, coord_map, i) for i, s in enumerate(seg_data)]
    row_ids = data.get("row") or [t for s in seg_data for t in s["ids"]]
    out = _row_data(row_labels(row_ids, segments))
    if len(segments) > 1:
        alone = [row_labels(s["ids"], [seg]).labels for s, seg in zip(seg_data, segments)]
        out["segment_labels"] = [list(a) for a in alone]
        out["packed_equals_concat"] = list(out["labels"]) == [v for a in alone for v in a]
    return out
