"""The JSONL contract: real files load end to end; every broken record fails before training with file:line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.data.jsonl import MAX_REPORTED, gt_from_record, gt_objects, load_jsonl
from coordexp.data.prompts import gt_answer_text
from coordexp.data.records import open_images
from coordexp.errors import CoordexpError, DataError
from tests.unit.data._files import record, write_image, write_jsonl

BOX = ["<|coord_10|>", "<|coord_20|>", "<|coord_300|>", "<|coord_400|>"]


def load_error(tmp_path: Path, lines: list[object]) -> str:
    path = write_jsonl(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as info:
        load_jsonl(path)
    return str(info.value)


def test_real_png_and_jpeg_load_end_to_end_with_relative_paths(data_dir: Path):
    poly = {"desc": "dog bed", "poly": [1, 2, "<|coord_30|>", 4, 50.0, "60"], "poly_points": 3}
    path = write_jsonl(data_dir / "train.jsonl", [
        record(metadata={"origin": "coco"}),
        "",
        record(images=["img/b.jpg"], width=32, height=32, objects=[poly, {"desc": "cup", "bbox_2d": [5, 5, 5, 9]}]),
        record(objects=[]),
    ])
    samples = load_jsonl(path)
    assert [s.sample_id for s in samples] == ["train#0", "train#1", "train#2"]
    assert [s.source for s in samples] == [f"{path}:1", f"{path}:3", f"{path}:4"]  # blank line 2 skipped
    first, second, empty = samples
    assert first.images == ((data_dir / "img" / "a.png").resolve(),)
    assert first.objects == (GTObject(1, "cat", GeomType.BBOX, (10, 20, 300, 400)),)
    assert dict(first.metadata) == {"metadata": {"origin": "coco"}}
    assert second.objects == (
        GTObject(1, "dog bed", GeomType.POLY, (1, 2, 30, 4, 50, 60)),  # tokens, ints, floats, decimal strings
        GTObject(2, "cup", GeomType.BBOX, (5, 5, 5, 9)),  # a zero-width box is allowed
    )
    assert empty.objects == ()
    # no augmentation: the coord tokens of the file reach the GT answer unchanged
    assert '"bbox_2d": ["<|coord_10|>", "<|coord_20|>", "<|coord_300|>", "<|coord_400|>"]' in gt_answer_text(first, "sorted")
    img_a, img_b = open_images(first)[0], open_images(second)[0]
    assert (img_a.mode, img_a.size, img_b.mode, img_b.size) == ("RGB", (64, 48), "RGB", (32, 32))


def test_image_root_and_absolute_paths(tmp_path: Path):
    root = tmp_path / "pictures"
    write_image(root / "x.png")
    absolute = write_image(tmp_path / "elsewhere" / "y.png")
    path = write_jsonl(tmp_path / "lists" / "val.jsonl", [record(images=["x.png"]), record(images=[str(absolute)])])
    samples = load_jsonl(path, image_root=root)
    assert [s.images[0] for s in samples] == [root / "x.png", absolute]
    # without the root, the relative path resolves against the JSONL folder, where it is missing
    with pytest.raises(DataError, match=re.escape(f"{path}:1") + r".*'x.png' -> .*lists/x.png.*custom.image_root"):
        load_jsonl(path)


CONTRACT_ERRORS = [
    # (record or raw line, the field named, a phrase of the message)
    ('{"images": ["img/a.png"], "width": 64', "", "not valid JSON"),
    ('{"objects": [], "objects": [], "images": ["img/a.png"], "width": 64, "height": 48}', "", "duplicate key 'objects'"),
    ("[1, 2]", "", "a record is one JSON object"),
    (record(objects=None) | {"objets": []}, "'objets' (did you mean 'objects'?)", "unknown field"),
    ({k: v for k, v in record().items() if k != "objects"}, "objects", "missing required field"),
    (record(width=0), "width", "positive int"),
    (record(height=-3), "height", "positive int"),
    (record(width=True), "width", "positive int"),
    ({k: v for k, v in record().items() if k != "height"}, "height", "it is missing"),
    (record(images="img/a.png"), "images", "non-empty list"),
    (record(images=[]), "images", "non-empty list"),
    (record(images=["img/missing.png"]), "images[0] 'img/missing.png'", "not found"),
    (record(objects={"desc": "cat"}), "'objects'", "must be a list"),
    (record(objects=["cat"]), "objects[0] (object_1)", "must be a JSON object"),
    (record(objects=[{"desc": "cat", "bbox_2d": BOX, "score": 1}]), "objects[0] (object_1)", "unknown key(s) 'score'"),
    (record(objects=[{"desc": "cat", "bbox": BOX}]), "'bbox' (did you mean 'bbox_2d'?)", "unknown key"),
    (record(objects=[{"desc": "cat", "line": [1, 2, 3, 4]}]), "objects[0]", "line geometry is not supported"),
    (record(objects=[{"desc": "cat", "bbox_2d": BOX, "poly": [1, 2, 3, 4, 5, 6]}]), "objects[0]", "both bbox_2d and poly"),
    (record(objects=[{"desc": "cat"}]), "objects[0]", "neither bbox_2d nor poly"),
    (record(objects=[{"desc": "", "bbox_2d": BOX}]), "objects[0]", "desc must be a non-empty string"),
    (record(objects=[{"desc": "cat: tabby", "bbox_2d": BOX}]), "objects[0]", "blur the JSON separators"),
    (record(objects=[{"desc": "cat<|im_end|>", "bbox_2d": BOX}]), "(sample train#1): objects[0] (object_1)", "special token '<|im_end|>'"),
    (record(objects=[{"desc": "cat", "bbox_2d": BOX}, {"desc": "x <|coord_5|>", "bbox_2d": BOX}]),
     "(sample train#1): objects[1] (object_2)", "special token '<|coord_5|>'"),
    (record(objects=[{"desc": "cat", "bbox_2d": [1, 2, 3, 1000]}]), "bbox_2d", "out of range 0..999: 1000"),
    (record(objects=[{"desc": "cat", "bbox_2d": [1, 2, 3, "<|coord_1000|>"]}]), "bbox_2d", "not a coord token or integer"),
    (record(objects=[{"desc": "cat", "bbox_2d": [-1, 2, 3, 4]}]), "bbox_2d", "out of range"),
    (record(objects=[{"desc": "cat", "bbox_2d": [1.5, 2, 3, 4]}]), "bbox_2d", "coord token or integer"),
    (record(objects=[{"desc": "cat", "bbox_2d": [[1, 2], [3, 4]]}]), "bbox_2d", "flat list"),
    (record(objects=[{"desc": "cat", "bbox_2d": [1, 2, 3]}]), "bbox_2d", "needs 4 values"),
    (record(objects=[{"desc": "cat", "bbox_2d": [30, 20, 10, 40]}]), "invalid bbox_2d [30, 20, 10, 40]", "x1 <= x2"),
    (record(objects=[{"desc": "cat", "bbox_2d": [10, 40, 30, 20]}]), "invalid bbox_2d [10, 40, 30, 20]", "y1 <= y2"),
    (record(objects=[{"desc": "cat", "poly": [1, 2, 3, 4]}]), "poly", "at least 6"),
    (record(objects=[{"desc": "cat", "poly": [1, 2, 3, 4, 5, 6, 7]}]), "poly", "even number"),
    (record(objects=[{"desc": "cat", "poly": [1, 2, 3, 4, 5, 6], "poly_points": 4}]), "poly_points=4", "3 vertices"),
    (record(objects=[{"desc": "cat", "bbox_2d": BOX, "poly_points": 2}]), "poly_points", "belongs to a poly"),
]


@pytest.mark.parametrize(("line", "field", "phrase"), CONTRACT_ERRORS)
def test_every_contract_error_names_file_line_and_field(data_dir: Path, line: object, field: str, phrase: str):
    message = load_error(data_dir, [record(), line])
    assert "train.jsonl:2" in message
    assert field in message
    assert phrase in message
    assert "1 record(s) break the data contract" in message


def test_undecodable_utf8_is_a_line_error(data_dir: Path):
    path = data_dir / "train.jsonl"
    path.write_bytes(json.dumps(record()).encode() + b"\n" + b'{"desc": "\xff"}\n')
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid UTF-8"):
        load_jsonl(path)


def test_whole_file_is_checked_and_the_report_is_capped(data_dir: Path):
    bad = [record(width=0) for _ in range(MAX_REPORTED + 5)]
    message = load_error(data_dir, [record(), *bad, record(objects=[{"desc": "cat", "bbox_2d": [1, 2, 3]}])])
    assert f"{MAX_REPORTED + 6} record(s) break the data contract ({MAX_REPORTED + 6} problem(s))" in message
    assert message.count("\n  - ") == MAX_REPORTED
    assert "... and 6 more problem(s)" in message
    assert "train.jsonl:2 " in message and f"train.jsonl:{MAX_REPORTED + 1} " in message


def test_one_record_reports_all_its_problems(data_dir: Path):
    message = load_error(data_dir, [record(width=0, images=["nope.png"], objects=[{"desc": "", "bbox_2d": BOX},
                                                                                  {"desc": "ok", "bbox_2d": [3, 3, 1, 1]}])])
    assert "1 record(s) break the data contract (4 problem(s))" in message
    for phrase in ("width must be", "image file(s) not found", "objects[0] (object_1): desc", "objects[1] (object_2): invalid"):
        assert phrase in message


def test_limit_reads_only_the_first_records(data_dir: Path):
    path = write_jsonl(data_dir / "train.jsonl", [record(), record(), "not json at all"])
    assert [s.source.rsplit(":", 1)[1] for s in load_jsonl(path, limit=2)] == ["1", "2"]
    with pytest.raises(DataError, match="train.jsonl:3:1: not valid JSON"):
        load_jsonl(path, limit=3)


def test_an_empty_or_missing_file_is_an_error(tmp_path: Path):
    with pytest.raises(DataError, match="holds no records"):
        load_jsonl(write_jsonl(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="does not exist"):
        load_jsonl(tmp_path / "absent.jsonl")


def test_gt_without_images_for_inspect_and_fixtures():
    gt = gt_from_record({"objects": [{"desc": "a", "bbox_2d": [1, 2, 3, 4]}], "width": 4, "height": 3}, where="r.json")
    assert gt == (GTObject(1, "a", GeomType.BBOX, (1, 2, 3, 4)),)
    with pytest.raises(DataError, match="r.json: missing required field.*objects"):
        gt_from_record({"width": 4, "height": 3}, where="r.json")
    with pytest.raises(DataError, match="r.json: width must be a positive int.*it is missing"):
        gt_from_record({"objects": [], "height": 3}, where="r.json")


def test_bbox_only_refuses_other_geometries_first():
    with pytest.raises(DataError, match=r"s: objects\[1\] \(object_2\): Stage-2 AB is bbox-only v1; found poly"):
        gt_objects([{"desc": "a", "bbox_2d": [1, 2, 3, 4]}, {"desc": "b", "poly": [1, 1, 5, 1, 5, 5]}], where="s", bbox_only=True)
    with pytest.raises(DataError, match="found mask_rle"):
        gt_objects([{"desc": "a", "bbox_2d": [1, 2, 3, 4], "mask_rle": {}}], where="s", bbox_only=True)
    assert len(gt_objects([{"desc": "b", "poly": [1, 1, 5, 1, 5, 5]}], where="s")) == 1


def test_contract_errors_are_coordexp_errors_never_bare_value_errors(data_dir: Path):
    for line, _, _ in CONTRACT_ERRORS:
        path = write_jsonl(data_dir / "one.jsonl", [line])
        with pytest.raises(CoordexpError):
            load_jsonl(path)
