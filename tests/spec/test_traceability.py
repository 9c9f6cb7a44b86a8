"""Every scenario with a runner has a fixture; every fixture names a scenario of its own change."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

from coordexp.spec.__main__ import main
from coordexp.spec.fixtures import load_fixture
from coordexp.spec.trace import load_fixture_files, trace, trace_tree

ST = "stage2-stability-controls"
PK = "2026-01-16-add-stage2-post-rollout-packing"


class PendingScenarios(UserWarning):
    """Scenarios whose transition has no runner yet; shown in pytest's warnings summary, never hidden."""


def test_real_tree_has_no_trace_errors():
    report = trace_tree()
    pending = report.pending()
    if pending:
        lines = [f"{change} [{t}]: {', '.join(ids)}" for change, by_t in pending.items() for t, ids in by_t.items()]
        warnings.warn(PendingScenarios(f"{sum(len(i) for b in pending.values() for i in b.values())} pending "
                                       "scenario(s) (no runner yet):\n" + "\n".join(lines)), stacklevel=1)
    by_kind: dict[str, list[str]] = {}
    for e in report.errors:
        by_kind.setdefault(e.kind, []).append(e.scenario or "?")
    summary = "; ".join(f"{kind}: {', '.join(sorted(ids))}" for kind, ids in sorted(by_kind.items()))
    assert report.ok, f"traceability errors ({summary}):\n" + "\n".join(str(e) for e in report.errors)


SPEC = """\
# Tiny

## Why
For tests.

## Requirements

### Requirement: Things work
It SHALL work.

#### Scenario: ST-STOP-001 Has a fixture
Transition: repeat
Source: x
- **WHEN** a
- **THEN** b

#### Scenario: ST-STOP-002 Runner but no fixture
Transition: repeat
Source: x
- **WHEN** a
- **THEN** b

#### Scenario: ST-METRIC-001 No runner yet
Transition: metrics
Source: x
- **WHEN** a
- **THEN** b

#### Scenario: ST-METRIC-002 Fixture with a different transition
Transition: metrics
Source: x
- **WHEN** a
- **THEN** b
"""


def _tree(tmp_path: Path) -> tuple[Path, Path]:
    spec_dir, fx = tmp_path / "spec", tmp_path / "fixtures"
    (spec_dir / ST).mkdir(parents=True)
    (spec_dir / ST / "spec.md").write_text(SPEC, encoding="utf-8")
    for change, scenario, transition in [
        (ST, "ST-STOP-001", "repeat"),
        (ST, "ST-METRIC-002", "repeat"),  # mismatch with the scenario's `metrics`
        (ST, "ST-GHOST-001", "repeat"),  # names no scenario
        (PK, "ST-STOP-002", "repeat"),  # right scenario, wrong change folder
    ]:
        (fx / change).mkdir(parents=True, exist_ok=True)
        data = {"scenario": scenario, "transition": transition, "input": {}}
        (fx / change / f"{scenario}.json").write_text(json.dumps(data), encoding="utf-8")
    (fx / ST / "ST-BROKEN-001.json").write_text("{not json", encoding="utf-8")
    (fx / "tokenizer").mkdir()
    (fx / "tokenizer" / "tokenizer.json").write_text("{}", encoding="utf-8")
    return spec_dir, fx


def test_trace_classifies_every_case(tmp_path):
    spec_dir, fx = _tree(tmp_path)
    report = trace_tree(spec_dir, fx, runner_names={"repeat"})
    (st,) = report.changes
    assert (st.change, st.total, st.with_fixture) == (ST, 4, ("ST-STOP-001",))
    # ST-METRIC-002's transition has no runner, so the scenario is pending; its wrong fixture is still an error
    assert dict(st.pending) == {"metrics": ("ST-METRIC-001", "ST-METRIC-002")}
    kinds = sorted((e.kind, e.scenario) for e in report.errors)
    assert kinds == [
        ("mismatch", "ST-METRIC-002"),
        ("missing", "ST-STOP-002"),
        ("orphan", "ST-GHOST-001"),
        ("orphan", "ST-STOP-002"),
        ("unreadable", "ST-BROKEN-001"),
    ]
    assert not report.ok
    missing = next(e for e in report.errors if e.kind == "missing")
    assert str(missing).startswith(f"{spec_dir / ST / 'spec.md'}:17: [missing] ST-STOP-002 has no fixture")
    wrong_folder = next(e for e in report.errors if e.kind == "orphan" and e.scenario == "ST-STOP-002")
    assert wrong_folder.change == PK and f"fixtures/{ST}/" in wrong_folder.message


def test_fixture_without_runner_is_an_error(tmp_path):
    spec_dir, fx = _tree(tmp_path)
    report = trace_tree(spec_dir, fx, runner_names=set())
    no_runner = sorted(e.scenario for e in report.errors if e.kind == "no_runner")
    # the ghost fixture is an orphan already; every fixture naming a real scenario lacks its runner
    assert no_runner == ["ST-METRIC-002", "ST-STOP-001", "ST-STOP-002"]
    # without runners, nothing is missing: every scenario is pending
    assert not any(e.kind == "missing" for e in report.errors)
    assert report.changes[0].pending_count == 4


def test_clean_tree_is_ok_and_renders(tmp_path):
    spec_dir, fx = _tree(tmp_path)
    for p in fx.rglob("*.json"):
        if p.parent.name != "tokenizer" and p.stem != "ST-STOP-001":
            p.unlink()
    (fx / ST / "ST-STOP-002.json").write_text(
        json.dumps({"scenario": "ST-STOP-002", "transition": "repeat", "input": {"ids": [1]}}), encoding="utf-8"
    )
    report = trace_tree(spec_dir, fx, runner_names={"repeat"})
    assert report.ok, [str(e) for e in report.errors]
    text = report.render()
    assert f"{ST}: 4 scenario(s), 2 with fixture, 2 pending, 0 error(s)" in text
    assert "  pending [metrics] (2): ST-METRIC-001, ST-METRIC-002" in text
    data = report.to_json()
    assert data["ok"] is True and data["changes"][0]["pending"] == {"metrics": ["ST-METRIC-001", "ST-METRIC-002"]}


def test_unreadable_fixtures_do_not_hide_the_others(tmp_path):
    _, fx = _tree(tmp_path)
    fixtures, errors = load_fixture_files(fx)
    assert sorted(f.scenario for f in fixtures) == ["ST-GHOST-001", "ST-METRIC-002", "ST-STOP-001", "ST-STOP-002"]
    assert [(e.kind, e.scenario) for e in errors] == [("unreadable", "ST-BROKEN-001")]
    assert "not valid JSON" in errors[0].message


def test_trace_is_pure_over_loaded_inputs(tmp_path):
    spec_dir, fx = _tree(tmp_path)
    from coordexp.spec.model import load_changes

    fixture = load_fixture(fx / ST / "ST-STOP-001.json")
    report = trace(load_changes(spec_dir), [fixture], {"repeat"})
    assert report.changes[0].with_fixture == ("ST-STOP-001",)
    assert [(e.kind, e.scenario) for e in report.errors] == [("missing", "ST-STOP-002")]


def test_cli_trace_json_and_exit_code(tmp_path, capsys, monkeypatch):
    import coordexp.spec.runners as registry

    spec_dir, fx = _tree(tmp_path)
    monkeypatch.setattr(registry, "runners", lambda: {"repeat": lambda data: data})
    code = main(["--spec-dir", str(spec_dir), "trace", "--json", "--fixtures-dir", str(fx)])
    data = json.loads(capsys.readouterr().out)
    assert code == 1 and data["ok"] is False
    assert {e["kind"] for e in data["errors"]} == {"missing", "mismatch", "orphan", "unreadable"}
    code = main(["--spec-dir", str(spec_dir), "trace", "--fixtures-dir", str(fx)])
    out = capsys.readouterr().out
    assert code == 1 and "[missing] ST-STOP-002" in out and out.rstrip().endswith("5 error(s) (1 outside any change)")
