"""Sample records: lazy image decoding with clear errors, object ordering, the Stage-2 target sample."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from coordexp.core.coordjson import GeomType, GTObject, Layout
from coordexp.data.records import Sample, open_images, order_objects, target_sample
from coordexp.errors import DataError
from tests.unit.data._files import write_image

LOW = GTObject(1, "low", GeomType.BBOX, (10, 700, 50, 800))
RIGHT = GTObject(2, "right", GeomType.BBOX, (600, 100, 700, 200))
LEFT = GTObject(3, "left", GeomType.BBOX, (100, 100, 200, 200))
POLY = GTObject(4, "poly", GeomType.POLY, (300, 90, 400, 300, 250, 300))  # top-left of its box: (250, 90)


def sample(objects=(LOW, RIGHT, LEFT, POLY), sid="s1", images=(), size=(64, 48)) -> Sample:
    return Sample(sid, images, size[0], size[1], objects, "test.jsonl:1", {"k": [1]})


def test_open_images_decodes_rgb_and_checks_the_declared_size(tmp_path: Path):
    rgba = write_image(tmp_path / "a.png", (64, 48), mode="RGBA")
    second = write_image(tmp_path / "b.jpg", (10, 10))
    images = open_images(sample(images=(rgba, second)))
    assert [(i.mode, i.size) for i in images] == [("RGB", (64, 48)), ("RGB", (10, 10))]
    in_memory = Image.new("L", (64, 48))
    assert open_images(sample(images=(in_memory,)))[0].mode == "RGB"
    with pytest.raises(DataError, match=r"test.jsonl:1 \(sample s1\): image .*a.png is 64x48 px but the record says width=32"):
        open_images(sample(images=(rgba,), size=(32, 48)))


def test_open_images_names_the_sample_path_and_fix(tmp_path: Path):
    with pytest.raises(DataError, match=r"test.jsonl:1 \(sample s1\): image .*gone.png does not exist.*custom.image_root"):
        open_images(sample(images=(tmp_path / "gone.png",)))
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    with pytest.raises(DataError, match=r"broken.png cannot be read.*custom.image_root"):
        open_images(sample(images=(broken,)))


def test_sorted_order_is_top_to_bottom_then_left_to_right_and_renumbers():
    ordered = order_objects(sample(), "sorted")
    assert [o.desc for o in ordered] == ["poly", "left", "right", "low"]  # poly anchors at y=90
    assert [o.index for o in ordered] == [1, 2, 3, 4]
    tie_a, tie_b = GTObject(1, "a", GeomType.BBOX, (5, 5, 9, 9)), GTObject(2, "b", GeomType.BBOX, (5, 5, 6, 6))
    assert [o.desc for o in order_objects(sample((tie_a, tie_b)), "sorted")] == ["a", "b"]  # ties keep source order


def test_random_order_is_seeded_per_sample_and_epoch():
    objs = tuple(GTObject(i, f"o{i}", GeomType.BBOX, (i, i, i + 1, i + 1)) for i in range(1, 9))
    s = sample(objs)
    with pytest.raises(DataError, match=r"needs the run's seed \(training.seed\)"):
        order_objects(s, "random")
    first = [o.desc for o in order_objects(s, "random", seed=3)]
    assert first == [o.desc for o in order_objects(s, "random", seed=3)]
    assert sorted(first) == sorted(o.desc for o in objs)
    others = {tuple(o.desc for o in order_objects(s, "random", seed=3, epoch=e)) for e in range(1, 6)}
    others |= {tuple(o.desc for o in order_objects(sample(objs, sid="s2"), "random", seed=3))}
    assert any(list(o) != first for o in others)
    with pytest.raises(DataError, match="custom.object_ordering"):
        order_objects(s, "shuffled")  # type: ignore[arg-type]


def test_target_sample_uses_the_same_order_and_the_bbox_only_rule():
    t = target_sample(sample(), ordering="sorted", layout=Layout.OBJECTS_ARRAY)
    assert t.gt == order_objects(sample(), "sorted") and t.layout is Layout.OBJECTS_ARRAY and t.sample_id == "s1"
    assert target_sample(sample(), ordering="random", seed=5).gt == order_objects(sample(), "random", seed=5)
    assert target_sample(sample()).gt == sample().objects
    with pytest.raises(DataError, match=r"sample s1\): objects\[3\] \('poly'\) is a poly; Stage-2 AB is bbox-only"):
        target_sample(sample(), bbox_only=True)
    assert len(target_sample(sample((LOW, LEFT)), bbox_only=True).gt) == 2


def test_metadata_is_read_only():
    with pytest.raises(TypeError):
        sample().metadata["k"] = 2  # type: ignore[index]
