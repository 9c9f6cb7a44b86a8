"""``python -m coordexp.inspect --gt FILE``: the match table and the Y_train mask drawing."""

from __future__ import annotations

import json

from coordexp.inspect import main

ROLLOUT = (
    '{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_100|>", "<|coord_100|>", "<|coord_200|>", "<|coord_200|>"]}, '
    '"object_2": {"desc": "dog", "bbox_2d": ["<|coord_700|>", "<|coord_700|>", "<|coord_800|>", "<|coord_800|>"]}'
)
RECORD = {"images": ["a.jpg"], "width": 64, "height": 48,
          "objects": [{"desc": "cat", "bbox_2d": [105, 100, 205, 200]}, {"desc": "person", "bbox_2d": [400, 400, 500, 520]}]}


def run(tmp_path, capsys, *extra):
    gt = tmp_path / "sample.json"
    gt.write_text(json.dumps(RECORD), encoding="utf-8")
    code = main(["--tokenizer", "char", "--text", ROLLOUT, "--gt", str(gt), *extra])
    return code, capsys.readouterr().out


def test_text_report_has_match_table_and_aligned_marks(tmp_path, capsys):
    code, out = run(tmp_path, capsys)
    assert code == 0
    table = out.split("== match")[1].split("== target")[0]
    assert any(line.split()[:4] == ["object_1", "cat", "100", "100"] and "matched" in line for line in table.splitlines())
    assert any("object_2" in line and "FP" in line for line in table.splitlines())
    assert "FN -> object_3" in table and "person" in table
    body = out.split("== target")[1].splitlines()
    chunks = [(body[i], body[i + 1]) for i in range(len(body) - 1) if body[i].startswith("  {") or '"person"' in body[i]]
    for text, marks in chunks:
        assert len(text) == len(marks)
    text, marks = next(c for c in chunks if '"person"' in c[0])
    start = text.index('"person"') + 1
    assert marks[start : start + 6] == "~~~~~~" and marks[start - 1] == "^"
    assert "c: 42->105 47->100 52->205 57->200" in out
    assert out.rstrip().splitlines()[-1].startswith("counters: ")


def test_json_report_and_stage2_ab_preset(tmp_path, capsys):
    code, out = run(tmp_path, capsys, "--json", "--preset", "stage2_ab")
    assert code == 0
    sections = json.loads(out)["sections"]
    assert set(sections) == {"parse", "match", "target"}
    target = sections["target"]
    assert len(target["text"]) == len(target["marks"]) and target["text"].endswith("}<|im_end|>")
    assert target["marks"].endswith("^" * len("}<|im_end|>"))
    assert "d" in target["marks"] and target["marks"][1] == "^"  # FN desc CE weight; matched key quote


def test_bad_gt_file_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]", encoding="utf-8")
    assert main(["--tokenizer", "char", "--text", "{}", "--gt", str(bad)]) == 2
    assert "a GT record is one JSON object" in capsys.readouterr().err


DEGENERATE = {
    "leading prose": "Sure! Here it is: {" + ROLLOUT[1:] + "}",
    "markdown fence": "```json\n{" + ROLLOUT[1:] + "}\n```",
    "two roots": ROLLOUT + "} " + ROLLOUT + "}",
    "unbalanced bracket": '{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_100|>", "<|coord_100|>"}, ' + ROLLOUT[1:],
    "escaped keys": '{"objec\\t_1": {"desc": "cat"}, "\\object_2": {}, ' + ROLLOUT[1:],
    "mixed list": '{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_100|>", "<|coord_100|>", ["<|coord_200|>", "<|coord_200|>"]]}}',
    "duplicate geometry key": '{"object_1": {"desc": "cat", "bbox_2d": ["<|coord_1|>", "<|coord_2|>"], '
                              '"bbox_2d": ["<|coord_100|>", "<|coord_100|>", "<|coord_200|>", "<|coord_200|>"]}}',
    "not JSON": "I see a cat.",
}


def test_every_degenerate_rollout_gives_a_target_through_the_cli(tmp_path, capsys):
    record = {**RECORD, "objects": [*RECORD["objects"], {"desc": "人", "bbox_2d": [1, 1, 9, 9]},
                                    {"desc": "🐕 dog", "bbox_2d": [600, 600, 700, 700]}]}
    gt = tmp_path / "unicode.json"
    gt.write_text(json.dumps(record, ensure_ascii=False), encoding="utf-8")
    for label, text in DEGENERATE.items():
        assert main(["--tokenizer", "fixture", "--text", text, "--gt", str(gt), "--json",
                     "--prefix-policy", "cut_at_first_invalid"]) == 0, label
        captured = capsys.readouterr()
        assert "Traceback" not in captured.err, label
        target = json.loads(captured.out)["sections"]["target"]
        assert target["text"].endswith("}<|im_end|>") and "人" in target["text"] and "🐕 dog" in target["text"], label
        assert len(target["text"]) == len(target["marks"]), label
