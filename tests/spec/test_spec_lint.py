"""The spec documents lint clean, and the linter catches each kind of broken document with file:line."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from coordexp.spec.__main__ import main
from coordexp.spec.lint import CATALOGUE_RANGES, lint
from coordexp.spec.model import CHANGE_PREFIXES, TRANSITIONS
from coordexp.spec.paths import CHANGE_IDS, REPO_ROOT

ST = "stage2-stability-controls"
PK = "2026-01-16-add-stage2-post-rollout-packing"

GOOD = """\
# A change

## Why
Because.

## Requirements

### Requirement: Stop rules fire
The rule SHALL fire.

#### Scenario: ST-STOP-001 It fires
Transition: repeat
Source: seed 000
- **WHEN** ids repeat
- **THEN** the rule fires
"""


def _write(root: Path, change: str, text: str) -> Path:
    path = root / change / "spec.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _lint(root: Path):
    return lint(root, required=(), catalogue={})


def _messages(report) -> list[str]:
    return [str(e) for e in report.errors]


def test_real_spec_tree_lints_clean():
    report = lint()
    assert report.ok, "spec lint errors:\n" + "\n".join(_messages(report))
    assert {c.id for c in report.changes} == set(CHANGE_IDS)


def test_vocabulary_and_prefixes_match_the_conventions_doc():
    doc = (REPO_ROOT / "docs" / "dev" / "conventions.md").read_text(encoding="utf-8")
    vocab_block = doc.split("Transition vocabulary", 1)[1].split("\n- ", 1)[0]
    assert set(re.findall(r"`([a-z_]+)`", vocab_block)) == TRANSITIONS
    table = dict(re.findall(r"^\s*\| ([0-9a-z-]+) \| `([A-Z]+)` \|$", doc, flags=re.M))
    assert table == CHANGE_PREFIXES


def test_catalogue_ranges_match_the_conventions_id_table():
    doc = (REPO_ROOT / "docs" / "dev" / "conventions.md").read_text(encoding="utf-8")
    rows = re.findall(r"`([A-Z]+-[A-Z]+)-001`\.\.`(?:[A-Z]+-[A-Z]+-)?(\d{3})`", doc)
    from_doc = {(area, int(n)) for area, n in rows}
    from_code = {pair for ranges in CATALOGUE_RANGES.values() for pair in ranges}
    assert from_doc == from_code
    for change, ranges in CATALOGUE_RANGES.items():
        assert all(area.split("-")[0] == CHANGE_PREFIXES[change] for area, _ in ranges)


def test_a_good_document_is_valid(tmp_path):
    _write(tmp_path, ST, GOOD)
    report = _lint(tmp_path)
    assert report.ok, _messages(report)
    assert report.summary() == "1 change(s), 1 requirement(s), 1 scenario(s): valid"


def test_missing_then_is_reported_at_the_scenario_line(tmp_path):
    path = _write(tmp_path, ST, GOOD.replace("- **THEN** the rule fires\n", ""))
    assert _messages(_lint(tmp_path)) == [f"{path}:11: scenario ST-STOP-001 has no `- **THEN**` line"]


def test_missing_when_and_transition_are_both_reported(tmp_path):
    path = _write(tmp_path, ST, GOOD.replace("- **WHEN** ids repeat\n", "").replace("Transition: repeat\n", ""))
    msgs = _messages(_lint(tmp_path))
    assert any(m.startswith(f"{path}:11: scenario ST-STOP-001 has no `Transition:` line") for m in msgs)
    assert f"{path}:11: scenario ST-STOP-001 has no `- **WHEN**` line" in msgs
    assert f"{path}:13: scenario ST-STOP-001: steps must start with `- **WHEN**`" in msgs


def test_duplicate_id_in_one_change(tmp_path):
    text = GOOD + "\n#### Scenario: ST-STOP-001 Again\nTransition: repeat\nSource: x\n- **WHEN** a\n- **THEN** b\n"
    path = _write(tmp_path, ST, text)
    msgs = _messages(_lint(tmp_path))
    assert len(msgs) == 1
    assert msgs[0].startswith(f"{path}:17: duplicate scenario id ST-STOP-001 (first defined at {path}:11)")


def test_duplicate_id_across_changes_is_caught_when_linting_one_change(tmp_path):
    _write(tmp_path, ST, GOOD)
    pk_text = GOOD.replace("Stop rules fire", "Other").replace("ST-STOP-001", "PK-ROW-001")
    pk_text += "\n#### Scenario: PK-ROW-002 Copy\nTransition: pack_row\nSource: x\n- **WHEN** a\n- **THEN** b\n"
    _write(tmp_path, PK, pk_text)
    st_text = GOOD + "\n#### Scenario: ST-ROW-002 Fine\nTransition: pack_row\nSource: x\n- **WHEN** a\n- **THEN** b\n"
    _write(tmp_path, ST, st_text.replace("ST-ROW-002", "PK-ROW-002"))
    report = lint(tmp_path, only=[ST], required=(), catalogue={})
    msgs = _messages(report)
    st_path = tmp_path / ST / "spec.md"
    # ST's folder sorts after PK's, so PK holds the first definition
    assert f"{st_path}:17: scenario id PK-ROW-002 does not use this change's prefix ST-" in msgs
    assert any(m.startswith(f"{st_path}:17: duplicate scenario id PK-ROW-002 (first defined at "
                            f"{tmp_path / PK / 'spec.md'}:17)") for m in msgs)
    assert [c.id for c in report.changes] == [ST]


def test_bad_ids(tmp_path):
    path = _write(tmp_path, ST, GOOD.replace("ST-STOP-001", "ST-stop-1"))
    msgs = _messages(_lint(tmp_path))
    assert msgs == [f"{path}:11: malformed scenario id 'ST-stop-1'; expected <PREFIX>-<AREA>-<NNN>, e.g. RM-PARSE-012"]
    path = _write(tmp_path, ST, GOOD.replace("ST-STOP-001", "RM-PARSE-001"))
    assert _messages(_lint(tmp_path)) == [f"{path}:11: scenario id RM-PARSE-001 does not use this change's prefix ST-"]


def test_unknown_transition_points_at_its_line(tmp_path):
    path = _write(tmp_path, ST, GOOD.replace("Transition: repeat", "Transition: parsing"))
    msgs = _messages(_lint(tmp_path))
    assert len(msgs) == 1
    assert msgs[0].startswith(f"{path}:12: scenario ST-STOP-001: unknown transition 'parsing'; use one of ")


def test_requirement_without_scenario(tmp_path):
    path = _write(tmp_path, ST, GOOD + "\n### Requirement: Lonely\nIt MUST have a scenario.\n")
    assert _messages(_lint(tmp_path)) == [
        f"{path}:17: requirement 'Lonely' has no scenario; add at least one `#### Scenario: <ID> <title>`"
    ]


def test_requirement_without_normative_word(tmp_path):
    path = _write(tmp_path, ST, GOOD.replace("The rule SHALL fire.", "The rule fires (shall, lower case)."))
    assert _messages(_lint(tmp_path)) == [
        f"{path}:8: requirement 'Stop rules fire' has no SHALL or MUST in its text; state the obligation normatively"
    ]


def test_all_problems_are_reported_at_once_in_line_order(tmp_path):
    text = (GOOD.replace("## Why\nBecause.\n", "")
            .replace("Source: seed 000\n", "Source: seed 000\nGarbage line\n")
            + "\n## Notes\n")
    path = _write(tmp_path, ST, text)
    errors = _lint(tmp_path).errors
    assert [(e.line, e.message.split(";")[0]) for e in errors] == [
        (1, "missing `## Why` section"),
        (12, "scenario ST-STOP-001: unrecognised line 'Garbage line'"),
        (16, "unexpected section `## Notes`"),
    ]
    assert all(str(e).startswith(f"{path}:") for e in errors)


def test_missing_catalogue_ids_and_missing_spec_files(tmp_path):
    _write(tmp_path, ST, GOOD)
    report = lint(tmp_path, required=[ST, PK], catalogue={ST: (("ST-STOP", 2),)})
    msgs = _messages(report)
    assert f"{tmp_path / ST / 'spec.md'}:1: catalogue scenarios missing from this change: ST-STOP-002 " \
           "(conventions id table maps every catalogue item to one id)" in msgs
    assert any(m.startswith(f"{tmp_path / PK / 'spec.md'}:0: change '{PK}' has no spec.md") for m in msgs)


def test_unknown_change_folder(tmp_path):
    path = _write(tmp_path, "2099-01-01-made-up", GOOD)
    msgs = _messages(_lint(tmp_path))
    assert msgs[0].startswith(f"{path}:1: unknown change folder '2099-01-01-made-up'")


def test_cli_validate_exit_codes(tmp_path, capsys):
    _write(tmp_path, ST, GOOD)
    assert main(["--spec-dir", str(tmp_path), "validate", ST]) == 0
    assert capsys.readouterr().out.strip() == "1 change(s), 1 requirement(s), 1 scenario(s): valid"
    path = _write(tmp_path, ST, GOOD.replace("- **THEN** the rule fires\n", ""))
    assert main(["--spec-dir", str(tmp_path), "validate", ST]) == 1
    captured = capsys.readouterr()
    assert f"{path}:11: scenario ST-STOP-001 has no `- **THEN**` line" in captured.err
    assert captured.out.strip().endswith("1 error(s)")


def test_cli_requires_a_command():
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2
