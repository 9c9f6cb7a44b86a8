"""docs/metrics.md is generated from the registry and current; the telemetry package imports light."""

from __future__ import annotations

import subprocess
import sys

from coordexp.spec.paths import REPO_ROOT
from coordexp.telemetry import docs
from coordexp.telemetry.keys import REGISTRY, RETIRED


def test_docs_metrics_md_is_current():
    current = docs.DOCS_PATH.read_text(encoding="utf-8") if docs.DOCS_PATH.is_file() else ""
    assert current == docs.render(), f"docs/metrics.md is stale; regenerate it with: {docs.REGENERATE}"


def test_every_key_family_and_retired_name_is_documented():
    text = docs.render()
    for k in REGISTRY.keys.values():
        shown = k.family.replace("{}", "<suffix>") if k.family else k.name
        assert f"| `{shown}` |" in text, k.name
        if k.family:
            assert f"`{k.name.rsplit('/', 1)[1]}`" in text, k.name
    for name in RETIRED:
        assert f"| `{name}` |" in text


def test_docs_show_rules_and_formulas():
    text = docs.render()
    assert "| `time/forward_s` | sum, ranks: max | s |" in text
    assert "ratio: `(2*rollout/matched_for_supervision) / (rollout/valid_pred_objects + rollout/gt_objects)`" in text
    assert "(den 0: absent)" in text and "(den 0: 1)" in text


def test_check_flag_reports_a_stale_file(tmp_path, monkeypatch):
    monkeypatch.setattr(docs, "DOCS_PATH", tmp_path / "metrics.md")
    assert docs.main(["--check"]) == 1
    assert docs.main(["--write"]) == 0 and docs.main(["--check"]) == 0


def test_registry_and_window_import_without_torch():
    code = ("import sys, coordexp.telemetry.keys, coordexp.telemetry.window, coordexp.eval.detection; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO_ROOT)
