"""The pure part of one Channel-B sample in order: parse -> prefix policy -> match -> build target.

The state machine runs these as separate transitions; this helper chains them for the places that
need all of them at once and keep every intermediate result (the ``target`` scenario runner,
``python -m coordexp.inspect --gt``, ``python -m coordexp.bench core``).
"""

from __future__ import annotations

import attrs

from coordexp.core.geometry import Shape
from coordexp.core.match import MatchConfig, MatchResult, match
from coordexp.core.parse import parse
from coordexp.core.parse_records import ParseResult, Rollout
from coordexp.core.prefix_policy import PrefixPolicyConfig, PrefixView, apply_prefix_policy
from coordexp.core.target import build_target
from coordexp.core.target_records import TargetConfig, TargetSample, TrainTarget
from coordexp.core.tokens import TokenContext


@attrs.frozen
class TargetTrace:
    """Every intermediate result of one sample, for inspection and scenarios."""

    parse: ParseResult  # as Parse returned it
    view: PrefixView  # what Match and BuildTarget saw
    match: MatchResult
    target: TrainTarget


def match_shapes(view: PrefixView, sample: TargetSample) -> tuple[list[Shape], list[Shape]]:
    """Match inputs: the view's valid predictions (appearance order) and the GT (GT order)."""
    preds = [Shape(o.geom_type, o.coord_bins) for o in view.parse.valid_objects]
    gts = [Shape(g.geom_type, g.points) for g in sample.gt]
    return preds, gts


def run_target_step(
    rollout: Rollout,
    sample: TargetSample,
    *,
    ctx: TokenContext,
    match_cfg: MatchConfig,
    target_cfg: TargetConfig,
    policy_cfg: PrefixPolicyConfig,
) -> TargetTrace:
    """Parse, apply the prefix policy, match and build the target of one rollout."""
    parsed = parse(rollout, ctx=ctx, layout=sample.layout)
    view = apply_prefix_policy(
        parsed, ctx=ctx, cfg=policy_cfg, layout=sample.layout, bbox_only=target_cfg.bbox_only, sample_id=sample.sample_id
    )
    preds, gts = match_shapes(view, sample)
    result = match(preds, gts, cfg=match_cfg)
    target = build_target(view, result, sample, ctx=ctx, cfg=target_cfg)
    return TargetTrace(parsed, view, result, target)
