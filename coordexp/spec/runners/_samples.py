"""Shared by the ``metrics`` and ``eval`` runners: fixture samples -> ``SampleOutcome`` through the real transitions.

A fixture sample is one rollout and its GT::

    {"text": "..."                                   the rollout text (encoded with the char tokenizer), or
     "pred": [{"desc": "cat", "bbox_2d": [..]}, ...], serialized with CoordJSON (norm1000 bins), then
     "cut": '"object_9": {"desc": "c',                appended after a comma instead of the closing brace;
     "gt": [{"desc": ..., "bbox_2d" | "poly": [...]}],  JSONL-contract objects (empty or missing: no GT)
     "completion_len": n, "prompt_len": n, "finish_reason": "length", "stop_rule": "max_object_keys",
     "decode_mode": "beam", "target": false}         (all optional; target: build a TrainTarget, training only)

Match, target and prefix-policy records come from the variant's minimal config plus ``config`` overrides
(``--set`` style), so every knob a fixture does not set is the schema default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from coordexp.bind import bind_match, bind_prefix_policy, bind_target, minimal_config
from coordexp.core.coordjson import GTObject, Layout, serialize
from coordexp.core.match import match
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import apply_prefix_policy
from coordexp.core.target import build_target
from coordexp.core.target_pipeline import match_shapes
from coordexp.core.target_records import TargetSample
from coordexp.core.tokens import TokenContext, char_context
from coordexp.data.jsonl import gt_object_from_dict, gt_objects
from coordexp.errors import SpecError
from coordexp.eval.detection import SampleOutcome

SAMPLE_KEYS = {"text", "pred", "cut", "gt", "completion_len", "prompt_len", "finish_reason", "stop_rule",
               "decode_mode", "target", "sample_id", "width", "height"}


class Pipeline:
    """The records of one fixture case: tokenizer, match / target / prefix-policy configs of a variant."""

    def __init__(self, variant: str, overrides: Sequence[str] = ()) -> None:
        cfg = minimal_config(variant, tuple(overrides))
        self.variant = variant
        self.ctx: TokenContext = char_context()
        self.match_cfg, self.target_cfg, self.policy_cfg = bind_match(cfg), bind_target(cfg), bind_prefix_policy(cfg)

    def outcome(self, sample: Mapping[str, Any], *, index: int, train: bool) -> SampleOutcome:
        if not isinstance(sample, Mapping) or not set(sample) <= SAMPLE_KEYS:
            raise SpecError(f"fixture sample {index}: keys must be among {sorted(SAMPLE_KEYS)}, got {sample!r}")
        sample_id = str(sample.get("sample_id", f"s{index}"))
        ids = tuple(self.ctx.encode(rollout_text(sample, index)))
        tsample = TargetSample(sample_id, self.gt_of(sample, sample_id), Layout.OBJECT_N)
        parsed = parse(Rollout(ids, sample_id=sample_id), ctx=self.ctx, layout=tsample.layout)
        view = apply_prefix_policy(parsed, ctx=self.ctx, cfg=self.policy_cfg, layout=tsample.layout,
                                   bbox_only=self.target_cfg.bbox_only, sample_id=sample_id)
        preds, gts = match_shapes(view, tsample)
        result = match(preds, gts, cfg=self.match_cfg)
        target = None
        if train and sample.get("target", True):
            target = build_target(view, result, tsample, ctx=self.ctx, cfg=self.target_cfg)
        return SampleOutcome(
            sample_id=sample_id, parse=parsed, match=result, completion_len=int(sample.get("completion_len", len(ids))),
            prompt_len=int(sample.get("prompt_len", 0)), finish_reason=sample.get("finish_reason"),
            stop_rule=sample.get("stop_rule"), decode_mode=sample.get("decode_mode", "greedy"), cut=view.cut,
            target=target,
        )


    def gt_of(self, sample: Mapping[str, Any], sample_id: str) -> tuple[GTObject, ...]:
        """The sample's GT objects, checked like a JSONL record's (bbox-only under Stage-2 AB)."""
        where = f"fixture sample {sample_id}"
        return gt_objects(sample.get("gt") or [], where=where, bbox_only=self.target_cfg.bbox_only)


def rollout_text(sample: Mapping[str, Any], index: int) -> str:
    if ("text" in sample) == ("pred" in sample):
        raise SpecError(f"fixture sample {index}: give exactly one of 'text' and 'pred'")
    if "text" in sample:
        return str(sample["text"])
    where = f"fixture sample {index} pred"
    objs = [gt_object_from_dict(o, index=i, where=where) for i, o in enumerate(sample["pred"], 1)]
    text = serialize(objs, layout=Layout.OBJECT_N)
    if "cut" in sample:
        text = text[:-1] + (", " if objs else "") + str(sample["cut"])
    return text


def rounded(record: Mapping[str, float], digits: int = 6) -> dict[str, float]:
    """Snapshot form of a metrics record: floats rounded, order kept."""
    return {k: round(v, digits) for k, v in record.items()}
