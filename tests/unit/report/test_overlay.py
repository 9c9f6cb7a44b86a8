"""Overlays: matched, FP and FN in distinct colours, at the pixels the project's coordinate rule gives."""

from __future__ import annotations

import itertools

from PIL import Image

from coordexp.core.coords import bin_to_pixel
from coordexp.report.overlay import (
    COLOURS,
    LEGEND_ROW,
    OverlayObject,
    PredictionSet,
    Status,
    draw_overlay,
    draw_panel,
    monitor_sample_sets,
    statuses,
)

GT = [OverlayObject("cat", "bbox_2d", (100, 100, 400, 400)), OverlayObject("dog", "bbox_2d", (600, 100, 900, 400))]
PREDS = PredictionSet("rollout", [OverlayObject("cat", "bbox_2d", (120, 120, 380, 380)),
                                  OverlayObject("tree", "poly", (100, 600, 400, 600, 250, 900))], matches=[(0, 0)])


def _colours(img: Image.Image) -> set[tuple[int, int, int]]:
    return {c for _, c in img.convert("RGB").getcolors(maxcolors=1 << 20)}


def test_statuses_follow_the_match():
    gt, pred = statuses(PREDS, len(GT))
    assert gt == [Status.GT_MATCHED, Status.FN] and pred == [Status.PRED_MATCHED, Status.FP]


def test_each_status_has_its_own_colour_and_all_appear():
    assert len(set(COLOURS.values())) == len(Status)
    for a, b in itertools.combinations(COLOURS.values(), 2):  # distinct to the eye, not only by one unit
        assert sum(abs(x - y) for x, y in zip(a, b)) > 150
    img = draw_panel(Image.new("RGB", (640, 480), (255, 255, 255)), GT, PREDS, width=640, height=480)
    assert set(COLOURS.values()) <= _colours(img)


def test_boxes_land_where_the_coordinate_rule_puts_them():
    """Bin k is pixel k/999*(dim-1) of the image, scaled with the panel (64 px -> 384 px here)."""
    gt = [OverlayObject("sq", "bbox_2d", (250, 500, 750, 999))]
    img = draw_panel(Image.new("RGB", (64, 64), (255, 255, 255)), gt, PredictionSet("none", []), width=64, height=64)
    scale = 384 / 64
    x1, y2 = bin_to_pixel(250, 64) * scale, bin_to_pixel(999, 64) * scale
    y_mid = (bin_to_pixel(500, 64) + bin_to_pixel(999, 64)) / 2 * scale
    assert img.getpixel((round(x1), round(y_mid) + LEGEND_ROW)) == COLOURS[Status.FN]  # left edge of the missed GT
    assert img.getpixel((round(x1) + 20, round(y2) + LEGEND_ROW)) == COLOURS[Status.FN]  # bottom edge, last pixel row
    assert img.getpixel((5, 5 + LEGEND_ROW)) == (255, 255, 255)  # nothing drawn outside the box


def test_missing_image_draws_a_grey_canvas_and_says_so():
    img = draw_overlay(None, GT, [PREDS], width=100, height=50)
    assert (200, 200, 200) in _colours(img)


def test_several_prediction_sets_are_panels_side_by_side():
    one = draw_overlay(None, GT, [PREDS], width=640, height=480)
    two = draw_overlay(None, GT, [PREDS, PredictionSet("replay", [], [])], width=640, height=480)
    assert two.width > 2 * one.width - 1 and two.height == one.height


def test_monitor_sample_rows():
    sample = {"gt_objects": [{"index": 0, "desc": "cat", "geom_type": "bbox_2d", "points": [1, 2, 3, 4]}],
              "pred_objects": [{"index": 0, "desc": "cat", "geom_type": "bbox_2d", "points": [1, 2, 3, 5],
                                "key": "object_1"}],
              "matches": [{"pred_i": 0, "gt_i": 0, "iou": 0.8}]}
    gt, preds = monitor_sample_sets(sample)
    assert gt[0].points == (1, 2, 3, 4) and preds.matches == ((0, 0),) and preds.objects[0].desc == "cat"
