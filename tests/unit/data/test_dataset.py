"""``load_samples``: one entry point for JSONL paths and generator URIs; bad addresses name the config key."""

from __future__ import annotations

from pathlib import Path

import pytest

from coordexp.data.dataset import GeneratorCall, load_samples, parse_generator_uri
from coordexp.errors import ConfigError, DataError
from tests.unit.data._files import record, write_image, write_jsonl


def test_a_jsonl_path_with_an_image_root_and_a_limit(tmp_path: Path):
    write_image(tmp_path / "root" / "img" / "a.png")
    path = write_jsonl(tmp_path / "data" / "train.jsonl", [record(), record(), record()])
    samples = load_samples(str(path), image_root=tmp_path / "root", limit=2)
    assert [s.sample_id for s in samples] == ["train#0", "train#1"]
    assert samples[0].images == (tmp_path / "root" / "img" / "a.png",)
    with pytest.raises(DataError, match="train.jsonl:1"):
        load_samples(path)  # the images are not beside the JSONL file


def test_a_generator_uri_gives_samples_and_respects_the_limit():
    samples = load_samples("synthetic://shapes?n=5&seed=2&size=48", limit=3)
    assert len(samples) == 3
    assert all(s.width == s.height == 48 and s.objects for s in samples)
    again = load_samples("synthetic://shapes?n=3&seed=2&size=48")
    assert [s.objects for s in again] == [s.objects for s in samples]


@pytest.mark.parametrize(("address", "why"), [
    ("synthetic://demo?n=4&seed=0", "unknown generator 'demo'"),
    ("synthetic://shapes?n=4", "seed must be a non-negative integer, got nothing"),
    ("synthetic://shapes?n=-1&seed=0", "n must be a non-negative integer, got '-1'"),
    ("synthetic://shapes?n=0&seed=0", "n must be >= 1"),
    ("synthetic://shapes?n=4&seed=0&n=5", "given twice"),
    ("synthetic://shapes/x?n=4&seed=0", "no path or fragment"),
    ("synthetic://shapes?n=4&seed=0#2", "no path or fragment"),
    ("synthetic://shapes?n=4&seed=0&colour=red", "unknown parameter"),
])
def test_a_malformed_generator_uri_is_a_config_error_naming_the_key(address: str, why: str):
    with pytest.raises(ConfigError) as info:
        load_samples(address, key="custom.val_jsonl")
    message = str(info.value)
    assert f"custom.val_jsonl={address!r}" in message and why in message


def test_a_missing_data_file_is_a_config_error(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"custom.train_jsonl: data file .*nope.jsonl does not exist.*synthetic://shapes"):
        load_samples(tmp_path / "nope.jsonl")


def test_parse_generator_uri_is_usable_by_config_validation_without_generating():
    assert parse_generator_uri("data/train.jsonl", key="custom.train_jsonl") is None
    call = parse_generator_uri("synthetic://shapes?n=8&seed=1&size=32", key="custom.train_jsonl")
    assert call == GeneratorCall("shapes", 8, 1, {"size": "32"})
