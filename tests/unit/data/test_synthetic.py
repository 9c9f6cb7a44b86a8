"""The synthetic shapes set: deterministic, honest boxes (tight pixel bounds of what was drawn), checked params."""

from __future__ import annotations

import numpy as np
import pytest

from coordexp.core.coordjson import GeomType
from coordexp.core.coords import pixel_to_bin
from coordexp.data.dataset import load_samples
from coordexp.data.synthetic import COLOURS, SHAPES, render, resolve_params, sample_rng, synthetic_samples
from coordexp.errors import ConfigError


def _pixels(sample) -> np.ndarray:
    return np.asarray(sample.images[0], dtype=np.int16)


def test_same_seed_same_samples_and_sample_k_does_not_depend_on_n():
    a = synthetic_samples(6, 3)
    b = synthetic_samples(6, 3)
    head = synthetic_samples(2, 3)
    assert [s.objects for s in a] == [s.objects for s in b]
    assert all(np.array_equal(_pixels(x), _pixels(y)) for x, y in zip(a, b))
    assert [s.objects for s in head] == [s.objects for s in a[:2]]
    assert np.array_equal(_pixels(head[1]), _pixels(a[1]))
    other = synthetic_samples(6, 4)
    assert [s.objects for s in other] != [s.objects for s in a]


def test_records_carry_size_ids_source_and_one_rgb_image():
    samples = synthetic_samples(3, 7, size="48", max_objects="2")
    assert [s.sample_id for s in samples] == ["shapes-7-0", "shapes-7-1", "shapes-7-2"]
    assert samples[2].source == "synthetic://shapes?n=3&seed=7&size=48&max_objects=2#2"
    for s in samples:
        assert (s.width, s.height) == (48, 48) == s.images[0].size
        assert s.images[0].mode == "RGB"
        assert 1 <= len(s.objects) <= 2
        assert [o.index for o in s.objects] == list(range(1, len(s.objects) + 1))


def test_every_box_is_the_tight_pixel_extent_of_its_shape():
    """Inside the box the shape touches all four edges; the one-pixel ring around it is background."""
    p = resolve_params({"max_objects": 4, "min_objects": 2})
    for k in range(40):
        image, shapes = render(p, sample_rng(11, k))
        px = np.asarray(image, dtype=np.int16)
        for s in shapes:
            x1, y1, x2, y2 = s.box_px
            colour = np.array(COLOURS[s.colour])
            hit = np.all(px == colour, axis=-1)
            inside = hit[y1 : y2 + 1, x1 : x2 + 1]
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any(), s
            ring = np.zeros_like(hit)
            ring[max(0, y1 - 1) : y2 + 2, max(0, x1 - 1) : x2 + 2] = True
            ring[y1 : y2 + 1, x1 : x2 + 1] = False
            assert not hit[ring].any(), s  # nothing of this colour touches the box from outside


def test_boxes_never_overlap_and_bins_follow_the_pixel_rule():
    p = resolve_params({"max_objects": 4, "size": 96})
    for k in range(30):
        _, shapes = render(p, sample_rng(5, k))
        boxes = [s.box_px for s in shapes]
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                assert a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]
    sample = synthetic_samples(1, 5, size=96, max_objects=4)[0]
    _, shapes = render(p, sample_rng(5, 0))
    assert [o.points for o in sample.objects] == [tuple(pixel_to_bin(v, 96) for v in s.box_px) for s in shapes]


def test_descs_name_colour_and_shape_and_all_kinds_occur():
    samples = synthetic_samples(60, 1)
    descs = [o.desc for s in samples for o in s.objects]
    assert all(o.geom_type is GeomType.BBOX for s in samples for o in s.objects)
    assert {d.split(" ")[0] for d in descs} == set(COLOURS)
    assert {d.split(" ")[1] for d in descs} == set(SHAPES)
    counts = [len(s.objects) for s in samples]
    assert min(counts) == 1 and max(counts) == 3  # the defaults: 1..3 objects


def test_shape_sizes_follow_the_extent_params():
    p = resolve_params({"min_extent": 0.5, "max_extent": 0.5, "max_objects": 1, "size": 64})
    for k in range(20):
        _, (shape,) = render(p, sample_rng(2, k))
        x1, y1, x2, y2 = shape.box_px
        assert x2 - x1 + 1 <= 32 and y2 - y1 + 1 <= 32  # a triangle or circle may be a pixel short of its frame
        assert x2 - x1 + 1 >= 30 and y2 - y1 + 1 >= 30


def test_noise_changes_pixels_not_boxes():
    clean = synthetic_samples(3, 9)
    noisy = synthetic_samples(3, 9, noise=8)
    assert [s.objects for s in clean] == [s.objects for s in noisy]
    diff = np.abs(_pixels(clean[0]) - _pixels(noisy[0]))
    assert 0 < diff.max() <= 8


@pytest.mark.parametrize(("params", "message"), [
    ({"colour": "red"}, "unknown parameter"),
    ({"size": "big"}, "size='big' must be an int in 16..1024"),
    ({"size": 8}, "size=8 must be an int in 16..1024"),
    ({"max_objects": 0}, "max_objects=0 must be an int in 1..8"),
    ({"min_objects": 3, "max_objects": 2}, "min_objects=3 exceeds max_objects=2"),
    ({"min_extent": 0.6, "max_extent": 0.4}, "min_extent=0.6 exceeds max_extent=0.4"),
    ({"max_extent": 1.5}, "max_extent=1.5 must be a float in (0, 1]"),
    ({"size": 16, "min_extent": 0.1}, "draws shapes under 3 px"),
])
def test_bad_parameters_are_config_errors(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        synthetic_samples(2, 0, **params)


def test_a_set_that_cannot_be_placed_is_an_error_not_fewer_objects():
    with pytest.raises(ConfigError, match="cannot place 8 non-overlapping shapes"):
        synthetic_samples(2, 0, min_objects=8, max_objects=8, min_extent=0.6, max_extent=0.9)


def test_the_dataset_uri_reaches_the_generator_with_its_params():
    samples = load_samples("synthetic://shapes?n=4&seed=3&size=32&max_objects=1&min_extent=0.3")
    assert [len(s.objects) for s in samples] == [1, 1, 1, 1]
    assert all(s.width == 32 for s in samples)
    assert [s.objects for s in samples] == [s.objects for s in synthetic_samples(4, 3, size=32, max_objects=1, min_extent=0.3)]
