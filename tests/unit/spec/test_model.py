"""Parsing spec.md documents into Change / Requirement / Scenario records."""

from __future__ import annotations

from pathlib import Path

from coordexp.spec.model import CHANGE_PREFIXES, load_changes, parse_change
from coordexp.spec.paths import CHANGE_IDS

DOC = """\
# Title of the change

## Why
Because the legacy
system was wrong.

## Requirements

### Requirement: Objects keep their order
The parser SHALL keep appearance order.
It MUST NOT sort.

#### Scenario: RM-PARSE-001 Appearance order
Transition: parse
Source: reference rollout 14.1 P1
Corrects: rollout 15 W10
- **WHEN** the rollout is `{"object_10": ...}`
- **AND** the tokenizer is the char tokenizer
- **THEN** valid indices are [10, 2]
  and the max index is 10
- **AND** the prefix ends with one `}`

#### Scenario: RM-PARSE-002 Second
Transition: parse
Source: seed 002
this line is stray
- **WHEN** x
- **THEN** y

### Requirement: Code fences hide headings
Text SHALL be kept.
```
#### Scenario: RM-PARSE-999 inside a fence
```
"""


def _parse(text: str = DOC):
    return parse_change(text, path=Path("spec.md"), change_id="2026-01-15-add-rollout-matching-trainer")


def test_change_title_why_and_sections():
    change = _parse()
    assert change.title == "Title of the change"
    assert change.why == "Because the legacy\nsystem was wrong."
    assert change.sections == (("Why", 3), ("Requirements", 7))
    assert [r.title for r in change.requirements] == ["Objects keep their order", "Code fences hide headings"]


def test_requirement_text_and_line():
    req = _parse().requirements[0]
    assert req.line == 9
    assert req.text == "The parser SHALL keep appearance order.\nIt MUST NOT sort."
    assert [s.id for s in req.scenarios] == ["RM-PARSE-001", "RM-PARSE-002"]


def test_scenario_fields_steps_and_groups():
    scn = _parse().requirements[0].scenarios[0]
    assert (scn.id, scn.title, scn.line) == ("RM-PARSE-001", "Appearance order", 13)
    assert scn.requirement == "Objects keep their order"
    assert (scn.transition, scn.source, scn.corrects) == ("parse", "reference rollout 14.1 P1", "rollout 15 W10")
    assert scn.field("Transition").line == 14
    assert [s.keyword for s in scn.steps] == ["WHEN", "AND", "THEN", "AND"]
    assert scn.when == ("the rollout is `{\"object_10\": ...}`", "the tokenizer is the char tokenizer")
    # the indented continuation joins its step; AND after THEN belongs to THEN
    assert scn.then == ("valid indices are [10, 2] and the max index is 10", "the prefix ends with one `}`")
    assert scn.steps[2].line == 19
    assert scn.stray == ()


def test_stray_lines_are_kept_for_the_linter():
    scn = _parse().requirements[0].scenarios[1]
    assert scn.corrects is None
    assert scn.stray == ((26, "this line is stray"),)


def test_headings_inside_code_fences_are_text():
    req = _parse().requirements[1]
    assert req.scenarios == ()
    assert "RM-PARSE-999" in req.text


def test_scenario_before_any_requirement_is_an_orphan():
    change = _parse("## Why\nx\n\n## Requirements\n#### Scenario: RM-X-001 lost\nTransition: parse\n")
    assert change.requirements == ()
    # the heading and the lines under it are reported, so nothing outside a requirement goes unnoticed
    assert change.orphans == ((5, "#### Scenario: RM-X-001 lost"), (6, "Transition: parse"))


def test_missing_why_is_none_and_empty_why_is_empty():
    assert _parse("## Requirements\n").why is None
    assert _parse("## Why\n\n## Requirements\n").why == ""


def test_load_changes_reads_only_folders_with_a_spec(tmp_path):
    (tmp_path / "b-change").mkdir()
    (tmp_path / "b-change" / "spec.md").write_text(DOC, encoding="utf-8")
    (tmp_path / "a-empty").mkdir()
    changes = load_changes(tmp_path)
    assert [c.id for c in changes] == ["b-change"]
    assert changes[0].path == tmp_path / "b-change" / "spec.md"
    assert load_changes(tmp_path, ["a-empty", "b-change"])[0].id == "b-change"


def test_prefix_table_covers_exactly_the_change_ids():
    assert set(CHANGE_PREFIXES) == set(CHANGE_IDS)
    assert len(set(CHANGE_PREFIXES.values())) == len(CHANGE_PREFIXES)


def test_real_spec_tree_parses_with_catalogue_sized_changes():
    by_id = {c.id: c for c in load_changes()}
    assert set(by_id) == set(CHANGE_IDS)
    assert len(by_id["2026-01-15-add-rollout-matching-trainer"].scenarios) >= 100
    assert len(by_id["stage2-ab-training"].scenarios) >= 74
    for change in by_id.values():
        for scn in change.scenarios:
            assert scn.path == change.path and scn.line > 0
