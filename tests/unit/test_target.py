"""BuildTarget: Y_train layout, supervision of each part, Channel-B switches, OT targets, errors."""

from __future__ import annotations

import json

import attrs
import numpy as np
import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.labels import IGNORE_INDEX
from coordexp.core.match import MatchConfig, MatchResult
from coordexp.core.ot import barycentric_projection
from coordexp.core.parse import parse
from coordexp.core.parse_records import ParsedObject, Rollout
from coordexp.core.target import build_target, closure_positions, pair_targets, token_kinds
from coordexp.core.target_pipeline import run_target_step
from coordexp.core.target_records import TargetConfig, TargetSample
from coordexp.core.tokens import char_context
from coordexp.errors import ConfigError, TargetError
from tests.records import ab_target, match_cfg, policy_cfg, sft_target

CTX = char_context()
EXACT = match_cfg(candidate_top_k=5)


def obj(n: int, desc: str, box: tuple[int, ...]) -> str:
    coords = ", ".join(f'"<|coord_{v}|>"' for v in box)
    return f'"object_{n}": {{"desc": "{desc}", "bbox_2d": [{coords}]}}'


def gt(index: int, desc: str, points: tuple[int, ...], geom: GeomType = GeomType.BBOX) -> GTObject:
    return GTObject(index, desc, geom, points)


def step(text: str, gts: tuple[GTObject, ...], cfg: TargetConfig | None = None, match_cfg: MatchConfig = EXACT):
    sample = TargetSample("s1", gts)
    return run_target_step(
        Rollout(tuple(CTX.encode(text))), sample, ctx=CTX, match_cfg=match_cfg, target_cfg=cfg or sft_target(),
        policy_cfg=policy_cfg(),
    )


E1 = "{" + obj(1, "cat", (100, 100, 200, 200)) + ", " + obj(2, "dog", (700, 700, 800, 800))
E1 += ', "object_3": {"desc": "x", "bbox_2d": ["<|coord_5|>"'
E1_GT = (gt(1, "cat", (105, 100, 205, 200)), gt(2, "person", (400, 400, 500, 520)))


def test_reference_e1_numbers_with_the_eos_supervised():
    raster = match_cfg(candidate_top_k=5, iou_mode="raster", fp_cost=1.0, fn_cost=2.0)
    trace = step(E1, E1_GT, match_cfg=raster)
    t = trace.target
    assert trace.match.matched_pairs == ((0, 0),) and trace.match.fp_pred_indices == (1,)
    assert (t.prefix_len, t.prefix_len + t.append_len, t.train_len) == (123, 189, 190)
    assert t.append_text.startswith(', "object_3": {"desc": "person"')
    prefix = [(p, b) for p, b, pre in zip(t.coord_positions, t.coord_target_bins, t.coord_is_prefix) if pre]
    assert [b for _, b in prefix] == [105, 100, 205, 200]
    ce = "".join(CTX.piece(t.y_train_ids[p]) for p in range(t.train_len) if t.labels[p] != IGNORE_INDEX)
    assert ce == ', "object_3": {"desc": "", "bbox_2d": ["", "", "", ""]}}<|im_end|>'
    assert t.y_train_ids[-1] == CTX.im_end_id and t.labels[-1] == CTX.im_end_id
    assert t.closure_positions == (188, 189)
    assert (t.counters.fp, t.counters.fn_appended, t.counters.dropped) == (1, 1, 1)


def test_fp_and_dropped_objects_get_nothing():
    t = step(E1, E1_GT).target
    dog_positions = range(62, 123)  # object_2 entry in the prefix
    assert all(t.labels[p] == IGNORE_INDEX for p in range(t.prefix_len))
    assert not set(dog_positions) & set(t.coord_positions)


def test_zero_gt_is_a_normal_sample():
    t = step("{" + obj(1, "cat", (1, 2, 3, 4)) + "}", ()).target
    assert t.append_text == "}"
    assert t.counters.fp == 1 and t.fn_gt_indices == ()
    assert [CTX.piece(t.y_train_ids[p]) for p in range(t.prefix_len, t.train_len) if t.labels[p] >= 0] == ["}", "<|im_end|>"]


def test_tail_desc_weight_closure_and_multiplier_switches():
    text = "{" + obj(1, "cat", (100, 100, 200, 200)) + ', "object_2": {"desc": "dog", "bbox_2d": [1, 2, 3, 4]}}'
    gts = (gt(1, "cat", (100, 100, 200, 200)), gt(2, "person", (400, 400, 500, 500)))
    t = step(text, gts, ab_target(fn_desc_ce_weight=0.5, drop_invalid_struct_ce_multiplier=2.0)).target
    kinds = token_kinds(t)
    weights = {k: {w for w, kk in zip(t.ce_weights, kinds) if kk == k} for k in set(kinds)}
    assert weights["desc_ce"] == {0.5} and weights["ce"] == {2.0} and weights["prefix_ce"] == {1.0}
    off = step(text, gts, sft_target(closure_supervision=False)).target
    assert all(off.labels[p] == IGNORE_INDEX for p in off.closure_positions)
    assert off.counters.drop_multiplier_applied is False


def test_multiplier_needs_drops():
    text = "{" + obj(1, "cat", (100, 100, 200, 200)) + "}"
    gts = (gt(1, "cat", (100, 100, 200, 200)), gt(2, "person", (400, 400, 500, 500)))
    a = step(text, gts, ab_target(drop_invalid_struct_ce_multiplier=3.0)).target
    b = step(text, gts, ab_target(drop_invalid_struct_ce_multiplier=1.0)).target
    assert a.ce_weights == b.ce_weights and a.labels == b.labels


def test_matched_prefix_structure_covers_only_matched_entries():
    text = "{" + obj(1, "matched", (100, 100, 200, 200)) + ", " + obj(2, "fp", (700, 700, 800, 800)) + "}"
    t = step(text, (gt(1, "cat", (100, 100, 200, 200)),), ab_target()).target
    prefix_ce = [p for p in range(t.prefix_len) if t.labels[p] >= 0]
    first_quote = text.index('"object_1"')
    assert prefix_ce[0] == first_quote
    assert text.index("matched") not in prefix_ce
    assert max(prefix_ce) < text.index('"object_2"')


def test_poly_pairs_use_ot_and_bbox_pairs_copy_gt():
    cfg = sft_target()
    pred = ParsedObject("object_1", 1, "a", "bbox_2d", (1, 2, 3, 4), (100, 100, 200, 200), (0, 1), (0, 1))
    assert pair_targets(pred, gt(1, "a", (110, 90, 1200, 210)), cfg) == (110, 90, 999, 210)
    square = gt(1, "a", (100, 100, 200, 100, 200, 200, 100, 200), GeomType.POLY)
    x1, y1, x2, y2 = pair_targets(pred, square, sft_target(ot_epsilon=0.5))
    assert (x1, y1, x2, y2) == (100, 100, 200, 200)
    shrunk = pair_targets(pred, square, sft_target(ot_epsilon=1000.0))
    assert shrunk[0] > 100 and shrunk[2] < 200  # entropic bias toward the centroid (reference W17)
    poly_pred = ParsedObject("object_1", 1, "a", "poly", (1, 2, 3, 4, 5, 6), (0, 0, 10, 0, 10, 10), (0, 1), (0, 1))
    assert len(pair_targets(poly_pred, square, cfg)) == 6
    assert pair_targets(pred, gt(1, "a", (1, 2, 3, 4, 5, 6)), cfg) is None  # a bbox GT with 6 numbers


def test_excluded_pair_returns_its_gt_as_fn():
    parsed = parse(Rollout(tuple(CTX.encode("{" + obj(1, "cat", (100, 100, 200, 200)) + "}"))), ctx=CTX)
    bad_gt = gt(1, "cat", (100, 100, 200, 200, 300, 300))
    fake = MatchResult(((0, 0),), (1.0,), (), (), 0, 1, 0, 0, 1.0, 1)
    t = build_target(parsed, fake, TargetSample("s9", (bad_gt,)), ctx=CTX, cfg=sft_target())
    assert t.counters.excluded_from_supervision == 1 and t.fn_gt_indices == (0,)
    assert not any(t.coord_is_prefix)


def test_match_from_another_view_is_refused():
    parsed = parse(Rollout(tuple(CTX.encode("{}"))), ctx=CTX)
    fake = MatchResult(((0, 0),), (1.0,), (), (), 0, 1, 0, 0, 1.0, 1)
    with pytest.raises(TargetError, match="sample s2: matched pair"):
        build_target(parsed, fake, TargetSample("s2", E1_GT), ctx=CTX, cfg=sft_target())


def test_prose_before_the_root_stays_as_unsupervised_context():
    trace = step("Sure! {" + obj(1, "cat", (1, 2, 3, 4)) + "}", (gt(1, "dog", (500, 500, 600, 600)),))
    t = trace.target
    assert t.prefix_text.startswith("Sure! {") and t.append_text.startswith(', "object_2": {"desc": "dog"')
    assert all(t.labels[p] == IGNORE_INDEX for p in range(t.prefix_len))
    json.loads(CTX.text_of(t.y_train_ids[:-1])[len("Sure! "):])


def test_append_after_a_prefix_that_is_not_append_ready_names_the_sample():
    parsed = parse(Rollout(tuple(CTX.encode("{" + obj(1, "cat", (1, 2, 3, 4)) + "}"))), ctx=CTX)
    closed = attrs.evolve(parsed, prefix_text=parsed.prefix_text + "}")
    fake = MatchResult((), (), (0,), (), 0, 0, 0, 0, 0.0, 0)
    with pytest.raises(TargetError, match="sample s1: cannot append"):
        build_target(closed, fake, TargetSample("s1", ()), ctx=CTX, cfg=sft_target())


def test_closure_ignores_braces_and_im_end_inside_strings():
    text = '{"object_1":{"desc":"a } b","bbox_2d":[1,2,3,4]}}<|im_end|>'
    ids = tuple(CTX.encode(text))
    assert closure_positions(ids, ctx=CTX, depth=0) == (48, 49)
    with pytest.raises(TargetError, match="never closes"):
        closure_positions(tuple(CTX.encode('{"a": "}"')), ctx=CTX, depth=0)
    with pytest.raises(TargetError, match="no <|im_end|>"):
        closure_positions(tuple(CTX.encode("}")), ctx=CTX)


def test_variant_switches_and_validation():
    ab = ab_target(fn_desc_ce_weight=0.25, drop_invalid_struct_ce_multiplier=1.5)
    assert (ab.matched_prefix_structure_ce, ab.fn_desc_ce_weight, ab.bbox_only) == (True, 0.25, True)
    rm = sft_target()
    assert (rm.matched_prefix_structure_ce, rm.fn_desc_ce_weight, rm.closure_supervision) == (False, 0.0, True)
    for bad in ({"drop_invalid_struct_ce_multiplier": 4.5}, {"fn_desc_ce_weight": -1.0}, {"ot_epsilon": 0.0},
                {"ot_cost": "l3"}, {"ot_iters": 0}):
        with pytest.raises(ConfigError):
            sft_target(**bad)


def test_sinkhorn_small_epsilon_is_nearly_a_permutation():
    pts = np.array([[0.0, 0.0], [100.0, 0.0], [100.0, 100.0]])
    out = barycentric_projection(pts[::-1], pts, epsilon=1.0, iters=50)
    assert np.allclose(out, pts[::-1], atol=1e-6)
    assert barycentric_projection(np.zeros((0, 2)), pts).shape == (0, 2)


def test_y_train_is_prefix_plus_append_plus_eos_and_valid_json():
    t = step(E1, E1_GT).target
    assert CTX.text_of(t.y_train_ids) == t.prefix_text + t.append_text + "<|im_end|>"
    json.loads(t.prefix_text + t.append_text)
    assert attrs.asdict(t.counters)["matched_for_supervision"] == 1
