"""Matching: config checks, counters, the tie rule, and properties against a brute-force optimum."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from coordexp.core.geometry import GeomType, Shape, iou
from coordexp.core.match import COST_SCALE, MatchResult, match
from coordexp.errors import ConfigError
from tests.records import match_cfg


def box(*p: int) -> Shape:
    return Shape(GeomType.BBOX, p)


# A small palette makes exact ties (identical and mirrored boxes) common.
PALETTE = [
    box(100, 100, 200, 200),
    box(150, 100, 250, 200),
    box(100, 150, 200, 250),
    box(120, 120, 180, 180),
    box(600, 600, 700, 700),
    box(620, 600, 720, 700),
]
shape_lists = st.lists(st.sampled_from(PALETTE), max_size=4)
gates = st.sampled_from([0.0, 0.3, 0.5])


# --- config -----------------------------------------------------------------------------------


def test_schema_defaults_follow_the_reference():
    cfg = match_cfg()
    assert (cfg.candidate_top_k, cfg.maskiou_gate, cfg.maskiou_resolution) == (10, 0.3, 256)
    assert (cfg.iou_mode.value, cfg.fp_cost, cfg.fn_cost) == ("exact", 1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"candidate_top_k": 0}, "candidate_top_k"),
        ({"maskiou_gate": 1.5}, "maskiou_gate"),
        ({"maskiou_gate": float("nan")}, "maskiou_gate"),
        ({"maskiou_resolution": 0}, "maskiou_resolution"),
        ({"fp_cost": -1.0}, "fp_cost"),
        ({"fn_cost": float("inf")}, "fn_cost"),
    ],
)
def test_invalid_config_names_the_key(kwargs, key):
    with pytest.raises(ConfigError, match=f"rollout_matching.{key}"):
        match_cfg(**kwargs)


def test_unknown_iou_mode_is_rejected():
    with pytest.raises(ValueError):
        match_cfg(iou_mode="fuzzy")


def test_costs_too_large_for_exact_integer_arithmetic_are_an_error():
    with pytest.raises(ConfigError, match="too large"):
        match([box(0, 0, 10, 10)], [box(0, 0, 10, 10)], cfg=match_cfg(fp_cost=1e7))


# --- behaviour --------------------------------------------------------------------------------


def test_empty_inputs_are_normal():
    cfg = match_cfg()
    assert match([], [], cfg=cfg) == MatchResult((), (), (), (), 0, 0, 0, 0, 0.0, 0)
    only_gt = match([], [box(0, 0, 5, 5), box(9, 9, 20, 20)], cfg=cfg)
    assert only_gt.fn_gt_indices == (0, 1) and only_gt.gating_rejections == 0
    assert match([box(0, 0, 5, 5)], [], cfg=cfg).fp_pred_indices == (0,)


def test_identical_pairs_tie_to_the_diagonal():
    a = box(100, 100, 200, 200)
    result = match([a, a], [a, a], cfg=match_cfg())
    assert result.matched_pairs == ((0, 0), (1, 1))
    assert result.matched_ious == (1.0, 1.0) and result.matched_iou_sum == 2.0


def test_earlier_prediction_wins_a_tie_for_one_gt():
    a = box(100, 100, 200, 200)
    result = match([box(600, 600, 700, 700), a, a], [a], cfg=match_cfg())
    assert result.matched_pairs == ((1, 0),) and result.fp_pred_indices == (0, 2)


def test_tie_between_matching_and_leaving_unmatched_prefers_matching():
    # IoU 0 at gate 0 costs 1.0 = fp_cost + fn_cost: both options are optimal.
    cfg = match_cfg(maskiou_gate=0.0, fp_cost=0.5, fn_cost=0.5)
    assert match([box(0, 0, 10, 10)], [box(500, 500, 600, 600)], cfg=cfg).matched_pairs == ((0, 0),)


def test_gate_equality_passes():
    result = match([box(0, 0, 10, 10)], [box(0, 0, 20, 10)], cfg=match_cfg(maskiou_gate=0.5))
    assert result.matched_pairs == ((0, 0),) and result.gating_rejections == 0


def test_gate_counts_every_rejected_candidate_pair():
    a, b = box(100, 100, 200, 200), box(600, 600, 700, 700)
    result = match([a, b], [b, a], cfg=match_cfg())
    assert result.gating_rejections == 2 and result.candidate_pairs_evaluated == 4


def test_top_k_limits_the_pairs_evaluated():
    gts = [box(100 + 10 * d, 100, 200 + 10 * d, 200) for d in range(6)]
    result = match([box(100, 100, 200, 200)], gts, cfg=match_cfg(candidate_top_k=3))
    assert result.candidate_pairs_evaluated == 3 and result.matched_pairs == ((0, 0),)


def test_centre_distance_fallback_is_counted():
    result = match(
        [box(0, 0, 10, 10), box(500, 500, 600, 600)],
        [box(20, 20, 30, 30), box(550, 550, 650, 650)],
        cfg=match_cfg(maskiou_gate=0.0, candidate_top_k=1),
    )
    assert result.center_fallback_preds == 1
    assert result.matched_pairs == ((0, 0), (1, 1))


def test_repaired_polygons_are_counted():
    bowtie = Shape(GeomType.POLY, (0, 0, 100, 100, 100, 0, 0, 100))
    result = match([bowtie], [box(0, 0, 100, 100)], cfg=match_cfg())
    assert result.repaired_polygons == 1 and result.matched_ious == pytest.approx((0.5,))


def test_raster_mode_loses_tiny_objects_that_exact_mode_matches():
    tiny = box(10, 10, 12, 12)
    assert match([tiny], [tiny], cfg=match_cfg()).matched_pairs == ((0, 0),)
    raster = match([tiny], [tiny], cfg=match_cfg(iou_mode="raster"))
    assert raster.matched_pairs == () and raster.fn_gt_indices == (0,)


# --- properties -------------------------------------------------------------------------------


def brute_force(preds, gts, cfg):
    """Every assignment (all pairs are candidates when top_k >= len(gts)), scored as match scores it."""
    fp, fn = round(cfg.fp_cost * COST_SCALE), round(cfg.fn_cost * COST_SCALE)
    scores = [[iou(p, g) for g in gts] for p in preds]
    options = [
        [j for j in range(len(gts)) if scores[i][j] >= cfg.maskiou_gate] + [None] for i in range(len(preds))
    ]
    best = []
    for choice in itertools.product(*options):
        used = [c for c in choice if c is not None]
        if len(used) != len(set(used)):
            continue
        total = sum(fp if c is None else round((1 - scores[i][c]) * COST_SCALE) for i, c in enumerate(choice))
        total += fn * (len(gts) - len(used))
        best.append((total, tuple(len(gts) if c is None else c for c in choice), choice))
    best.sort()
    optimal = [b for b in best if b[0] == best[0][0]]
    return optimal


def choices(result: MatchResult, n_pred: int) -> tuple:
    matched = dict(result.matched_pairs)
    return tuple(matched.get(i) for i in range(n_pred))


@settings(max_examples=150, deadline=None)
@given(shape_lists, shape_lists, gates)
def test_result_is_the_canonical_optimum(preds, gts, gate):
    cfg = match_cfg(maskiou_gate=gate)
    result = match(preds, gts, cfg=cfg)
    optimal = brute_force(preds, gts, cfg)
    assert choices(result, len(preds)) == optimal[0][2]


@settings(max_examples=150, deadline=None)
@given(shape_lists, shape_lists, gates)
def test_every_index_is_accounted_for_exactly_once(preds, gts, gate):
    result = match(preds, gts, cfg=match_cfg(maskiou_gate=gate))
    matched_preds = [p for p, _ in result.matched_pairs]
    matched_gts = [g for _, g in result.matched_pairs]
    assert sorted(matched_preds + list(result.fp_pred_indices)) == list(range(len(preds)))
    assert sorted(matched_gts + list(result.fn_gt_indices)) == list(range(len(gts)))
    assert matched_preds == sorted(matched_preds)
    assert all(v >= gate for v in result.matched_ious)
    assert result.matched_iou_count == len(result.matched_pairs)
    assert result.matched_iou_sum == pytest.approx(sum(result.matched_ious))


@settings(max_examples=50, deadline=None)
@given(shape_lists, shape_lists, gates)
def test_result_is_deterministic_under_repetition(preds, gts, gate):
    cfg = match_cfg(maskiou_gate=gate)
    first = match(preds, gts, cfg=cfg)
    assert all(match(preds, gts, cfg=cfg) == first for _ in range(3))


@settings(max_examples=150, deadline=None)
@given(shape_lists, shape_lists, gates, st.randoms(use_true_random=False))
def test_permuting_gts_permutes_a_unique_result(preds, gts, gate, rnd):
    cfg = match_cfg(maskiou_gate=gate)
    assume(len(brute_force(preds, gts, cfg)) == 1)  # no ties
    perm = list(range(len(gts)))
    rnd.shuffle(perm)  # new position k holds old GT perm[k]
    before = match(preds, gts, cfg=cfg)
    after = match(preds, [gts[k] for k in perm], cfg=cfg)
    assert tuple((p, perm[g]) for p, g in after.matched_pairs) == before.matched_pairs
    assert sorted(perm[g] for g in after.fn_gt_indices) == list(before.fn_gt_indices)
    assert after.fp_pred_indices == before.fp_pred_indices
