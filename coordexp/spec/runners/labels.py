"""Runner for ``labels``: one synthetic segment (reference 14.5) -> its labels and coord supervision.

Input::

    {"coord_ids": {"10": 10, "20": 20},            (token id -> bin)
     "segments": [{"ids": [...],                    (the segment's tokens: prompt, assistant, suffix)
                   "prompt_len": 5, "prefix_len": 3, "train_len": 6,
                   "eos_id": 0,                     (optional: the token after Y_train is the EOS; it
                                                     joins the supervised tail, as BuildTarget does)
                   "prefix_coord": [[1, 123]],      (assistant-local position, target bin)
                   "tail_ignore": [0, 2]}]}         (tail-relative)

The span rules run through ``coordexp.core.labels.assistant_labels``, the code BuildTarget uses. The
output states them at the segment's own positions, as the reference does: the prompt and anything after
the assistant span have no label, and assistant position ``p`` is segment position ``prompt_len + p``
(the shift the learner applies, ``coordexp.learn.segments``). Packing several segments into one row is
the learner's (``Transition: learn`` scenarios). Output: the labels, weights (only when some differ from
0/1) and coord supervision as ``[position, bin, is_prefix]``.
"""

from __future__ import annotations

from typing import Any

from coordexp.core.labels import IGNORE_INDEX, assistant_labels
from coordexp.errors import SpecError

TRANSITION = "labels"

_SEG_KEYS = {"ids", "prompt_len", "prefix_len", "train_len", "eos_id", "prefix_coord", "tail_ignore", "sample_id"}


def _segment(data: dict[str, Any], coord_map: dict[int, int]) -> dict[str, Any]:
    unknown = set(data) - _SEG_KEYS
    if unknown:
        raise SpecError(f"labels fixture segment: unknown keys {sorted(unknown)}")
    ids, prompt_len, train_len = list(data["ids"]), data["prompt_len"], data["train_len"]
    if "eos_id" in data:
        if ids[prompt_len + train_len] != data["eos_id"]:
            raise SpecError(f"labels fixture segment: the token after Y_train is not eos_id {data['eos_id']}")
        train_len += 1
    if prompt_len + train_len > len(ids):
        raise SpecError(f"labels fixture segment: prompt {prompt_len} + target {train_len} exceed {len(ids)} ids")
    lab = assistant_labels(
        ids[prompt_len : prompt_len + train_len],
        prefix_len=data["prefix_len"],
        coord_id_to_bin=coord_map,
        prefix_coord=[tuple(pc) for pc in data.get("prefix_coord", [])],
        tail_ignore=data.get("tail_ignore", []),
        sample_id=data.get("sample_id", "seg0"),
    )
    after = len(ids) - prompt_len - train_len
    out: dict[str, Any] = {
        "labels": [IGNORE_INDEX] * prompt_len + list(lab.labels) + [IGNORE_INDEX] * after,
        "coord": [[prompt_len + p, b, pre] for p, b, pre in zip(lab.coord_positions, lab.coord_bins, lab.coord_is_prefix)],
    }
    if any(w not in (0.0, 1.0) for w in lab.weights):
        out["weights"] = [0.0] * prompt_len + list(lab.weights) + [0.0] * after
    return out


def run(data: dict[str, Any]) -> Any:
    if set(data) != {"coord_ids", "segments"} or len(data["segments"]) != 1:
        raise SpecError("labels fixture: {'coord_ids', 'segments': [one segment]} (packing is a learn scenario)")
    coord_map = {int(k): int(v) for k, v in data["coord_ids"].items()}
    return _segment(data["segments"][0], coord_map)
