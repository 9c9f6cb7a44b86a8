"""Which coord slots a Channel-B segment carries as boxes: matched prefix and FN objects, never FP (AB 3.5)."""

from __future__ import annotations

import pytest

from coordexp.bind import bind_match, bind_prefix_policy, bind_target, minimal_config
from coordexp.core.box_slots import box_slot_groups
from coordexp.core.coordjson import GTObject, Layout, serialize
from coordexp.core.keys import GeomType
from coordexp.core.match import match
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import apply_prefix_policy
from coordexp.core.target import build_target
from coordexp.core.target_pipeline import match_shapes
from coordexp.core.target_records import TargetSample
from coordexp.core.tokens import char_context
from coordexp.errors import TargetError


def _box(index: int, desc: str, *points: int) -> GTObject:
    return GTObject(index, desc, GeomType.BBOX, points)


def _target(preds: list[GTObject], gt: list[GTObject]):
    cfg = minimal_config("stage2_ab_training")
    ctx = char_context()
    ids = ctx.encode(serialize(preds, layout=Layout.OBJECT_N))
    parsed = parse(Rollout(tuple(ids), sample_id="s"), ctx=ctx)
    view = apply_prefix_policy(parsed, ctx=ctx, cfg=bind_prefix_policy(cfg), layout=Layout.OBJECT_N, bbox_only=True,
                               sample_id="s")
    sample = TargetSample("s", gt, Layout.OBJECT_N)
    preds_m, gts_m = match_shapes(view, sample)
    return build_target(view, match(preds_m, gts_m, cfg=bind_match(cfg)), sample, ctx=ctx, cfg=bind_target(cfg)), ctx


def test_matched_prefix_and_fn_objects_are_boxes_fp_is_not():
    gt = [_box(1, "cat", 100, 100, 300, 300), _box(2, "dog", 600, 600, 900, 900)]
    preds = [_box(1, "cat", 102, 98, 305, 301), _box(2, "kite", 10, 700, 40, 990)]  # a match and an FP
    target, ctx = _target(preds, gt)
    assert target.matched_gt_indices == (0,) and target.fn_gt_indices == (1,) and target.counters.fp == 1
    boxes = box_slot_groups(target.y_train_ids, target.coord_positions, ctx=ctx)
    assert boxes == ((0, 1, 2, 3), (4, 5, 6, 7))  # 8 coord slots: the matched object's 4, then the FN's 4
    prefix = [target.coord_is_prefix[i] for i in boxes[0]], [target.coord_is_prefix[i] for i in boxes[1]]
    assert prefix == ([True] * 4, [False] * 4)
    assert [target.coord_target_bins[i] for i in boxes[0]] == [100, 100, 300, 300]  # toward the matched GT
    assert [target.coord_target_bins[i] for i in boxes[1]] == [600, 600, 900, 900]


def test_a_rollout_with_only_fp_gives_only_fn_boxes():
    gt = [_box(1, "cat", 100, 100, 300, 300)]
    target, ctx = _target([_box(1, "kite", 800, 10, 990, 90)], gt)
    assert target.counters.fp == 1 and target.fn_gt_indices == (0,)
    assert box_slot_groups(target.y_train_ids, target.coord_positions, ctx=ctx) == ((0, 1, 2, 3),)


def test_partly_supervised_box_is_an_error():
    target, ctx = _target([_box(1, "cat", 100, 100, 300, 300)], [_box(1, "cat", 100, 100, 300, 300)])
    with pytest.raises(TargetError, match="only some of its 4 coord tokens"):
        box_slot_groups(target.y_train_ids, target.coord_positions[1:], ctx=ctx, sample_id="s")
