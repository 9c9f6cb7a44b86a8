"""Shapes and IoU: analytic values, exact vs raster, degenerate and reversed boxes, polygon repair."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from coordexp.core.geometry import (
    GeomType,
    IouMode,
    Shape,
    aabb,
    aabb_array,
    box_iou,
    center_dist2_matrix,
    iou,
    pair_ious,
    raster_mask,
    to_polygon,
)
from coordexp.errors import DataError


def box(*p: int) -> Shape:
    return Shape(GeomType.BBOX, p)


def poly(*p: int) -> Shape:
    return Shape(GeomType.POLY, p)


def as_poly(b: Shape) -> Shape:
    x1, y1, x2, y2 = (int(v) for v in aabb(b))
    return poly(x1, y1, x2, y1, x2, y2, x1, y2)


coord = st.integers(0, 999)
boxes = st.tuples(coord, coord, coord, coord).map(lambda p: box(*p))


# --- records ----------------------------------------------------------------------------------


def test_shape_accepts_the_geometry_key_as_string():
    assert Shape("bbox_2d", (1, 2, 3, 4)).geom_type is GeomType.BBOX
    assert Shape("poly", [1, 2, 3, 4, 5, 6]).points == (1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    ("geom", "points", "message"),
    [
        ("bbox_2d", (1, 2, 3), "exactly 4"),
        ("poly", (1, 2, 3, 4), "even count >= 6"),
        ("poly", (1, 2, 3, 4, 5, 6, 7), "even count >= 6"),
        ("bbox_2d", (1.5, 2, 3, 4), "integers"),
        ("bbox_2d", (True, 2, 3, 4), "integers"),
    ],
)
def test_shape_rejects_malformed_points(geom, points, message):
    with pytest.raises(DataError, match=message):
        Shape(geom, points)


def test_unknown_geometry_key_is_rejected():
    with pytest.raises(ValueError):
        Shape("mask_rle", (1, 2, 3, 4))


# --- AABB and vectorised boxes -------------------------------------------------------------------


def test_aabb_normalises_reversed_boxes_and_clamps_to_canvas():
    assert aabb(box(200, 300, 100, 50)) == (100.0, 50.0, 200.0, 300.0)
    assert aabb(box(900, 900, 1200, 1500)) == (900.0, 900.0, 999.0, 999.0)
    assert aabb(poly(5, 9, 1, 2, 7, 4)) == (1.0, 2.0, 7.0, 9.0)


def test_box_iou_is_analytic_and_continuous():
    a = aabb_array([box(0, 0, 10, 10)])[0]
    assert box_iou(a, aabb_array([box(5, 0, 15, 10)])[0]) == pytest.approx(1 / 3, abs=1e-15)
    assert box_iou(a, aabb_array([box(10, 0, 20, 10)])[0]) == 0.0  # touching edges do not overlap
    assert box_iou(a, aabb_array([box(0, 0, 20, 10)])[0]) == 0.5


def test_box_iou_matrix_matches_pairwise_scores():
    a = aabb_array([box(0, 0, 10, 10), box(100, 100, 300, 200)])
    b = aabb_array([box(5, 0, 15, 10), box(100, 100, 300, 200), box(0, 0, 0, 0)])
    matrix = box_iou(a[:, None], b[None])
    assert matrix.shape == (2, 3)
    for i in range(2):
        for j in range(3):
            assert matrix[i, j] == box_iou(a[i], b[j])
    assert matrix[1, 1] == 1.0


def test_zero_area_boxes_are_one_only_when_identical():
    line = aabb_array([box(100, 100, 100, 200)])[0]
    assert box_iou(line, line) == 1.0
    assert box_iou(line, aabb_array([box(100, 100, 100, 150)])[0]) == 0.0
    assert box_iou(line, aabb_array([box(50, 50, 150, 250)])[0]) == 0.0  # contained, still no area


def test_center_distance_matrix():
    d = center_dist2_matrix(
        aabb_array([box(0, 0, 10, 10)]), aabb_array([box(20, 20, 30, 30), box(0, 0, 10, 10)])
    )
    assert d.tolist() == [[800.0, 0.0]]


@given(boxes, boxes)
def test_vectorised_box_iou_equals_scalar_iou(a, b):
    va = box_iou(aabb_array([a])[:, None], aabb_array([b])[None])[0, 0]
    assert va == iou(a, b)
    assert iou(a, b) == iou(b, a)
    assert 0.0 <= iou(a, b) <= 1.0


# --- exact vs raster ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "exact", "raster"),
    [
        (box(100, 100, 200, 200), box(100, 100, 200, 200), 1.0, 1.0),
        (box(100, 100, 200, 200), box(150, 100, 250, 200), 1 / 3, 13 / 38),
        (box(200, 200, 100, 100), box(150, 100, 250, 200), 1 / 3, 13 / 38),  # reversed
        (box(10, 10, 12, 12), box(10, 10, 12, 12), 1.0, 0.0),  # tiny: raster sees nothing
        (box(10, 10, 14, 14), box(10, 10, 14, 14), 1.0, 1.0),
        (box(100, 100, 100, 200), box(100, 100, 100, 200), 1.0, 0.0),  # zero width
        (box(100, 100, 200, 200), poly(100, 100, 200, 100, 200, 200, 100, 200), 1.0, 1.0),
        (poly(100, 100, 300, 100, 100, 300), box(100, 100, 300, 300), 0.5, 25 / 51),
        (box(900, 900, 1200, 1100), box(900, 900, 999, 999), 1.0, 1.0),  # clamped
    ],
)
def test_reference_values(a, b, exact, raster):
    assert iou(a, b) == pytest.approx(exact, abs=1e-12)
    assert iou(a, b, mode="raster", resolution=256) == pytest.approx(raster, abs=1e-12)


def test_raster_mask_covers_pixel_centres_inside_the_outline():
    # [100, 200] scales to [25.6, 51.0] px at R=256: centres 26.5 .. 50.5 -> columns/rows 26..50.
    mask = raster_mask(box(100, 100, 200, 200), 256)
    rows, cols = np.nonzero(mask)
    assert mask.sum() == 25 * 25
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (26, 50, 26, 50)


def test_raster_mask_rows_are_y_and_columns_are_x():
    mask = raster_mask(box(0, 500, 999, 999), 100)  # lower half of the canvas
    assert mask[:40].sum() == 0 and mask[60:98, 10].all() and mask[60:98, :98].all()
    assert not mask[99].any()  # centre 99.5 lies beyond the scaled edge at 99.0


def test_raster_resolution_changes_quantisation():
    a, b = box(100, 100, 200, 200), box(150, 100, 250, 200)
    fine = iou(a, b, mode=IouMode.RASTER, resolution=1024)
    assert abs(fine - 1 / 3) < abs(iou(a, b, mode="raster", resolution=256) - 1 / 3)


def test_raster_rejects_a_resolution_below_one():
    with pytest.raises(DataError, match="maskiou_resolution"):
        iou(box(0, 0, 10, 10), box(0, 0, 10, 10), mode="raster", resolution=0)


@given(
    boxes.filter(lambda b: min(aabb(b)[2] - aabb(b)[0], aabb(b)[3] - aabb(b)[1]) >= 150), st.integers(-60, 60)
)
def test_raster_approximates_exact_for_large_boxes(a, shift):
    x1, y1, x2, y2 = (int(v) for v in aabb(a))
    b = box(x1 + shift, y1, x2 + shift, y2)
    assert abs(iou(a, b, mode="raster") - iou(a, b)) < 0.05


# --- polygons ----------------------------------------------------------------------------------


@given(boxes, boxes)
def test_polygon_path_agrees_with_analytic_bbox_path(a, b):
    if min(np.diff(np.reshape(aabb(a), (2, 2)), axis=0).ravel()) == 0:
        return  # zero-area: vertex-set rule, covered separately
    assert iou(as_poly(a), b) == pytest.approx(iou(a, b), abs=1e-9)
    assert iou(as_poly(a), as_poly(b)) == pytest.approx(iou(a, b), abs=1e-9)


def test_self_intersecting_polygon_is_repaired_and_flagged():
    bowtie = poly(0, 0, 100, 100, 100, 0, 0, 100)  # two triangles meeting at (50, 50)
    fixed = to_polygon(bowtie)
    assert fixed.repaired and fixed.area == pytest.approx(5000.0)
    assert not to_polygon(poly(0, 0, 100, 0, 100, 100)).repaired
    scored = pair_ious([bowtie], [box(0, 0, 100, 100)], np.array([0]), np.array([0]))
    assert scored.ious[0] == pytest.approx(0.5)
    assert scored.repaired_polygons == 1


def test_zero_area_polygons_follow_the_vertex_set_rule():
    segment = poly(0, 0, 50, 50, 100, 100)
    assert to_polygon(segment).area == 0.0
    assert iou(segment, poly(100, 100, 0, 0, 50, 50)) == 1.0  # same vertices, other order
    assert iou(segment, poly(0, 0, 60, 60, 100, 100)) == 0.0
    assert iou(segment, box(0, 0, 100, 100)) == 0.0


def test_pair_ious_scores_each_requested_pair():
    a = [box(0, 0, 10, 10), poly(0, 0, 10, 0, 10, 10, 0, 10)]
    b = [box(5, 0, 15, 10), box(0, 0, 10, 10)]
    out = pair_ious(a, b, np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]))
    assert out.ious == pytest.approx([1 / 3, 1.0, 1 / 3, 1.0])
    assert out.repaired_polygons == 0
    assert len(pair_ious(a, b, np.array([], dtype=int), np.array([], dtype=int)).ious) == 0


def _legacy_mask_iou(a: Shape, b: Shape, resolution: int = 256) -> float:
    """Reference rollout 5.3 read literally: normalised quad / vertex list, clamp, scale, frPyObjects per pair."""
    from pycocotools import mask as mask_utils

    def outline(s: Shape) -> list[float]:
        p = list(s.points)
        if s.geom_type == "bbox_2d":
            x1, y1, x2, y2 = min(p[0], p[2]), min(p[1], p[3]), max(p[0], p[2]), max(p[1], p[3])
            p = [x1, y1, x2, y1, x2, y2, x1, y2]
        return [min(999, max(0, v)) * (resolution - 1) / 999 for v in p]

    ra = mask_utils.merge(mask_utils.frPyObjects([outline(a)], resolution, resolution))
    rb = mask_utils.merge(mask_utils.frPyObjects([outline(b)], resolution, resolution))
    return float(mask_utils.iou([ra], [rb], [0])[0][0])


def test_raster_mode_equals_the_legacy_rasteriser_on_random_shapes():
    rng = np.random.default_rng(0)
    pairs = []
    for _ in range(2000):
        shapes = []
        for _ in range(2):
            if rng.random() < 0.4:
                shapes.append(Shape("bbox_2d", tuple(int(v) for v in rng.integers(-20, 1020, 4))))
            else:
                n = int(rng.integers(3, 8))
                cx, cy, r = rng.integers(0, 1000), rng.integers(0, 1000), rng.integers(1, 200)
                pts = np.stack([cx + rng.integers(-r, r + 1, n), cy + rng.integers(-r, r + 1, n)], 1).ravel()
                shapes.append(Shape("poly", tuple(int(v) for v in pts)))
        pairs.append(shapes)
    ours = pair_ious([a for a, _ in pairs], [b for _, b in pairs], np.arange(2000), np.arange(2000), mode="raster")
    assert ours.ious.tolist() == [_legacy_mask_iou(a, b) for a, b in pairs]
