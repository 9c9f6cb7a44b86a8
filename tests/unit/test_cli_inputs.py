"""``inspect`` and ``bench`` turn every bad argument into a message naming the flag and exit 2, no traceback."""

from __future__ import annotations

import pytest

from coordexp import inspect
from coordexp.bench.__main__ import main as bench_main

DEEP = "[" * 200_000 + "]" * 200_000


def inspect_exits_2(capsys, *argv: str) -> str:
    assert inspect.main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err
    return err


def test_rollout_file_that_is_not_utf8(capsys, tmp_path):
    path = tmp_path / "rollout.txt"
    path.write_bytes(b'{"object_1": {"desc": "caf\xe9"}}')
    assert f"--file {path}:1: not UTF-8 text (byte 0xe9 at offset 26)" in inspect_exits_2(capsys, "--file", str(path), "--tokenizer", "char")


def test_rollout_text_with_undecodable_bytes(capsys):
    text = b'{"object_1": \xff}'.decode("utf-8", "surrogateescape")  # what Python makes of such argv bytes
    err = inspect_exits_2(capsys, "--text", text, "--tokenizer", "char")
    assert "--text: the text is not valid UTF-8 (byte 0xff at character 13)" in err


def test_missing_rollout_file(capsys, tmp_path):
    assert "--file" in inspect_exits_2(capsys, "--file", str(tmp_path / "nope.txt"), "--tokenizer", "char")


@pytest.mark.parametrize(("ids", "expected"), [
    ("-1,5", "--ids: token id -1 is outside the vocabulary [0, "),
    ("5,99999999", "--ids: token id 99999999 is outside"),
    ("5,abc", "--ids: 'abc' is not an integer"),
])
def test_token_ids_outside_the_vocabulary(capsys, ids, expected):
    assert expected in inspect_exits_2(capsys, "--ids", ids, "--tokenizer", "char")


def test_gt_record_nested_200k_deep(capsys, tmp_path):
    path = tmp_path / "gt.json"
    path.write_text(DEEP, encoding="utf-8")
    err = inspect_exits_2(capsys, "--text", "{}", "--tokenizer", "char", "--gt", str(path))
    assert f"--gt {path}: JSON nested too deeply to read" in err


def test_gt_record_that_is_not_utf8(capsys, tmp_path):
    path = tmp_path / "gt.json"
    path.write_bytes(b'{"objects": [{"desc": "\xff"}]}')
    assert f"--gt {path}:1: not UTF-8 text" in inspect_exits_2(capsys, "--text", "{}", "--tokenizer", "char",
                                                                  "--gt", str(path))


def test_rollout_nested_200k_deep_is_parsed_not_crashed(capsys):
    """A rollout is model output: a pathological one is a parse result (a fallback), not an error."""
    assert inspect.main(["--text", DEEP, "--tokenizer", "char", "--json"]) == 0
    assert '"fallback"' in capsys.readouterr().out


def test_tokenizer_errors_name_the_flag(capsys, tmp_path):
    err = inspect_exits_2(capsys, "--text", "{}", "--tokenizer", str(tmp_path / "missing"))
    assert f"--tokenizer {tmp_path / 'missing'}: tokenizer directory" in err
    assert "give char, fixture or a tokenizer directory" in err
    assert "tokenizer_path" not in err and "model.path" not in err  # no keys that do not exist


@pytest.mark.parametrize("argv", [
    ["parse", "--samples", "0"],
    ["core", "--samples", "0"],
    ["core", "--rounds", "-1"],
    ["parse", "--objects", "x"],
    ["learn", "--segments", "0"],
])
def test_bench_counts_are_checked_by_flag(capsys, argv):
    with pytest.raises(SystemExit) as info:
        bench_main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {argv[1]}:" in err and "Traceback" not in err
