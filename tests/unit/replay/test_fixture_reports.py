"""The diagnosis of the constructed runs, in every format, equals the counts the construction implies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from coordexp.replay import fixtures
from coordexp.replay.cli import main
from coordexp.spec.paths import REPO_ROOT

CASES = [(run, fmt) for run in fixtures.RUNS for fmt in fixtures.FORMATS]


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[tuple[str, str], dict]:
    root = tmp_path_factory.mktemp("replay")
    out = {}
    for (run, fmt), path in fixtures.write_all(root / "in").items():
        folder = root / "out" / run / fmt
        assert main(["--rollouts", str(path), "--out", str(folder), "--quiet"]) == 0
        out[(run, fmt)] = {"metrics": json.loads((folder / "metrics.json").read_text(encoding="utf-8")),
                           "folder": folder}
    return out


@pytest.mark.parametrize(("run", "fmt"), CASES)
def test_figures_equal_the_construction(reports, run, fmt):
    metrics = reports[(run, fmt)]["metrics"]
    want = fixtures.expected(run, fmt)
    assert {k: metrics.get(k) for k in want} == pytest.approx(want)


@pytest.mark.parametrize(("run", "fmt"), CASES)
def test_report_numbers_snapshot(reports, run, fmt, snapshot):
    """Every diagnosis figure and its flag, reviewed once (the construction test pins the counts)."""
    metrics = reports[(run, fmt)]["metrics"]
    assert {k: round(v, 6) for k, v in sorted(metrics.items()) if k.startswith("diagnosis/")} == snapshot


def test_degenerate_report_flags_the_cures_and_lists_the_slot_values(reports):
    folder: Path = reports[("degenerate", "vllm_debug")]["folder"]
    md = (folder / "report.md").read_text(encoding="utf-8")
    # replayed under the shipped base config, which is the seed's cure: what it already does is not suggested
    # (its object cap of 60 and budget of 2048), what it does not do is (the near-duplicate stop is off there)
    assert "OUT OF RANGE" in md and "already applies the seed's config-first cures" in md
    assert "max_object_keys: 60 (" not in md and "max_new_tokens: 2048 or lower" not in md
    assert "duplicate_object.enabled: true (" in md
    assert '"\\u5c3c\\u65af" | non_ascii | 3' in md  # the CJK slot value, as seed 000 reported it
    html = (folder / "report.html").read_text(encoding="utf-8")
    assert "尼斯" in html and "data:image/png;base64," in html
    rows = [json.loads(line) for line in (folder / "samples.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["truncated"] for r in rows] == [False, False, True, False]
    for name in ("dropped.png", "slot_tokens.png", "same_desc.png", "overlay_0.png"):
        assert (folder / name).stat().st_size > 1000


def test_healthy_report_has_no_out_of_range_figure(reports):
    for fmt in fixtures.FORMATS:
        md = (reports[("healthy", fmt)]["folder"] / "report.md").read_text(encoding="utf-8")
        assert "OUT OF RANGE" not in md, fmt


def test_a_coordexp_recording_reports_generated_tokens_against_the_cap(reports):
    metrics = reports[("degenerate", "rollouts")]["metrics"]
    assert metrics["diagnosis/max_new_tokens"] == fixtures.MAX_NEW_TOKENS
    assert metrics["diagnosis/gen_tokens_p90_over_cap"] == pytest.approx(
        metrics["diagnosis/gen_tokens_p90"] / fixtures.MAX_NEW_TOKENS)
    assert "diagnosis/gen_tokens_p90" not in reports[("degenerate", "vllm_debug")]["metrics"]  # re-tokenized: unknown


def test_gt_vs_pred_says_which_figures_are_estimated(reports):
    md = (reports[("degenerate", "gt_vs_pred")]["folder"] / "report.md").read_text(encoding="utf-8")
    assert "estimated: valid_json_rate and truncated" in md
    assert reports[("degenerate", "gt_vs_pred")]["metrics"]["diagnosis/legacy_valid_pred_objects"] == 17


def test_cures_are_those_the_replayed_config_does_not_apply_yet(tmp_path):
    """Under the prod config (no object cap, b_ratio 0.85, 3084 tokens) the seed's cures are suggested."""
    path = fixtures.write_all(tmp_path / "in")[("degenerate", "vllm_debug")]
    prod = REPO_ROOT / "configs" / "stage2_ab" / "prod" / "ab_mixed.yaml"
    assert main(["--rollouts", str(path), "--config", str(prod), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    md = (tmp_path / "out" / "report.md").read_text(encoding="utf-8")
    assert "max_object_keys: 60 (" in md and "b_ratio: 0.05 (" in md
    assert "max_new_tokens: 2048 or lower" not in md  # ab_mixed's budget is 2048 already: not suggested
