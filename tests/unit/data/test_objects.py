"""One contract object -> GTObject (moved here from the core CoordJSON tests with the rules themselves)."""

from __future__ import annotations

import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.data.jsonl import gt_object_from_dict, gt_objects
from coordexp.errors import DataError


def test_record_object_with_tokens_or_ints():
    obj = gt_object_from_dict({"desc": "cup", "bbox_2d": ["<|coord_10|>", 20, 30.0, "<|coord_40|>"]}, index=3, where="r")
    assert obj == GTObject(3, "cup", GeomType.BBOX, (10, 20, 30, 40))
    poly = gt_object_from_dict({"desc": "mat", "poly": [1, 2, 3, 4, 5, 6], "poly_points": 3}, index=1, where="r")
    assert poly.geom_type is GeomType.POLY and poly.points == (1, 2, 3, 4, 5, 6)
    assert gt_object_from_dict({"desc": "é café", "bbox_2d": [1, 2, 3, 4], "poly": None}, index=1, where="r").desc == "é café"


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"desc": "x", "line": [1, 2, 3, 4]}, "line geometry is not supported"),
        ({"desc": "x", "bbox_2d": [1, 2, 3, 4], "poly": [1, 2, 3, 4, 5, 6]}, "found both bbox_2d and poly"),
        ({"desc": "x"}, "found neither"),
        ({"desc": "x", "bbox_2d": [1, 2, 3]}, "bbox_2d needs 4 values"),
        ({"desc": "x", "poly": [1, 2, 3, 4]}, "at least 6"),
        ({"desc": "x", "poly": [1, 2, 3, 4, 5, 6, 7]}, "even number"),
        ({"desc": "x", "poly": [1, 2, 3, 4, 5, 6], "poly_points": 4}, "poly_points=4"),
        ({"desc": "x", "poly": [1, 2, 3, 4, 5, 6], "poly_points": True}, "poly_points=True"),
        ({"desc": "x", "bbox_2d": [1, 2, 3, 1000]}, "out of range"),
        ({"desc": "x", "bbox_2d": [1, 2, 3, 4.5]}, "coord token or integer"),
        ({"desc": "x", "bbox_2d": [1, 2, 3, float("nan")]}, "coord token or integer"),
        ({"desc": "x", "bbox_2d": "1, 2, 3, 4"}, "must be a flat list"),
        ({"desc": "x", "bbox_2d": [3, 2, 1, 4]}, "reversed boxes are refused"),
        ({"desc": "  ", "bbox_2d": [1, 2, 3, 4]}, "non-empty"),
        ({"desc": 7, "bbox_2d": [1, 2, 3, 4]}, "non-empty string"),
        ({"desc": "a, b", "bbox_2d": [1, 2, 3, 4]}, "contains ', '"),
        ({"desc": "a\tb", "bbox_2d": [1, 2, 3, 4]}, "contains"),
        ({"desc": "a  b", "bbox_2d": [1, 2, 3, 4]}, "contains '  '"),
        ({"desc": "a / b", "bbox_2d": [1, 2, 3, 4]}, "contains ' /'"),
        ({"desc": "<|endoftext|>", "bbox_2d": [1, 2, 3, 4]}, "special token '<|endoftext|>'"),
        ({"desc": "x", "bbox_2d": [1, 2, 3, 4], "Desc": "y"}, "'Desc' (did you mean 'desc'?)"),
    ],
)
def test_record_object_violations_name_the_object(obj, message):
    with pytest.raises(DataError, match="objects\\[4\\] \\(object_5\\)") as err:
        gt_object_from_dict(obj, index=5, where="train.jsonl:12")
    assert message in str(err.value)
    assert str(err.value).startswith("train.jsonl:12:")


def test_gt_objects_needs_a_list_and_keeps_record_order():
    objs = gt_objects([{"desc": "b", "bbox_2d": [5, 5, 9, 9]}, {"desc": "a", "bbox_2d": [1, 1, 2, 2]}], where="r")
    assert [(o.index, o.desc) for o in objs] == [(1, "b"), (2, "a")]
    assert gt_objects([], where="r") == ()
    with pytest.raises(DataError, match="r: 'objects' must be a list"):
        gt_objects(None, where="r")
