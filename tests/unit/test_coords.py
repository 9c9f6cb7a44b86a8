"""The norm1000 coordinate codec: tokens, bins, floats, pixels, the coord-vocab mask."""

from __future__ import annotations

import pytest

from coordexp.core import coords


def test_token_bin_float_round_trip():
    assert coords.parse_coord_token("<|coord_123|>") == 123
    assert coords.coord_token(123) == "<|coord_123|>"
    assert coords.bin_to_float(123) == pytest.approx(123 / 999)
    assert coords.bin_to_float(999) == 1.0
    for k in (0, 1, 123, 500, 998, 999):
        assert coords.float_to_bin(coords.bin_to_float(k)) == k
        assert coords.parse_coord_token(coords.coord_token(k)) == k


def test_out_of_range_tokens_and_bins_are_rejected():
    assert coords.parse_coord_token("<|coord_1000|>") is None
    assert coords.parse_coord_token("<|coord_12") is None
    with pytest.raises(ValueError, match="0..999"):
        coords.coord_token(1000)
    with pytest.raises(ValueError):
        coords.coord_token(True)
    with pytest.raises(ValueError, match="out of range"):
        coords.to_bin(1000)


def test_float_to_bin_clamps():
    assert coords.float_to_bin(-0.2) == 0
    assert coords.float_to_bin(1.7) == 999


def test_mixed_list_conversion():
    assert coords.to_bins(["<|coord_1|>", 2, "3", 4.0, " <|coord_5|> ", "0042"]) == (1, 2, 3, 4, 5, 42)


@pytest.mark.parametrize(
    "bad", [2.5, 3.0001, float("nan"), True, None, "x", "-1", "1000", "<|coord_1000|>", "３"]
)
def test_mixed_list_rejects_non_bins(bad):
    with pytest.raises(ValueError):
        coords.to_bins([1, bad])


def test_integral_float_within_tolerance_is_accepted():
    assert coords.to_bin(6.0000001) == 6


def test_pixel_conversion_rounds_and_rejects_outside_pixels():
    assert coords.pixels_to_bins([0, 0, 2, 2], width=4, height=4) == (0, 0, 666, 666)
    assert coords.pixels_to_bins([639, 0], width=640, height=480) == (999, 0)
    with pytest.raises(ValueError, match="1332"):
        coords.pixels_to_bins([4, 4, 4, 4], width=4, height=4)
    with pytest.raises(ValueError, match="pairs"):
        coords.pixels_to_bins([1, 2, 3], width=4, height=4)


def test_pixel_recovery_uses_each_axis():
    assert coords.bins_to_pixels([10, 20, 200, 220], width=1000, height=800) == (10, 16, 200, 176)
    assert coords.bins_to_pixels([999, 999], width=1, height=1) == (0, 0)
    with pytest.raises(ValueError, match="pairs"):
        coords.bins_to_pixels([1], width=4, height=4)


def test_coord_vocab_mask_ignores_ids_beyond_the_size():
    mask = coords.coord_vocab_mask(range(1000), 1005)
    assert len(mask) == 1005 and sum(mask) == 1000
    assert mask[0] and mask[999] and not mask[1004]
    shifted = coords.coord_vocab_mask([5, 6, 10], 8)
    assert shifted == (False,) * 5 + (True, True, False)
    with pytest.raises(ValueError):
        coords.coord_vocab_mask([1], -1)


def test_validate_coord_ids_catches_unk_collapse():
    assert coords.validate_coord_ids(list(range(10, 1010)))[0] == 10
    with pytest.raises(ValueError, match="not distinct"):
        coords.validate_coord_ids([0] * 1000)
    with pytest.raises(ValueError, match="missing"):
        coords.validate_coord_ids([None, *range(1, 1000)])
    with pytest.raises(ValueError, match="expected 1000"):
        coords.validate_coord_ids([1, 2])
