"""``python -m coordexp.report RUN_DIR`` on a real tiny run folder, and its clear errors on bad input."""

from __future__ import annotations

import json
import shutil

import pytest

from coordexp.report.__main__ import main
from coordexp.report.run_report import build_report

FAMILIES = ("losses", "detection", "truncation", "gen_tokens", "channel_mix", "desc")


@pytest.fixture(scope="module")
def report(run_folder, tmp_path_factory):
    """The report of the real run, written once through the CLI."""
    out = tmp_path_factory.mktemp("report")
    summary = build_report(run_folder, out)
    return summary, (out / "report.html").read_text(encoding="utf-8")


def test_cli_writes_the_report(run_folder, tmp_path, capsys):
    assert main([str(run_folder), "--out", str(tmp_path), "--max-overlays", "1"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "report.html") in printed and "1 overlays" in printed
    assert (tmp_path / "report.html").is_file() and len(list((tmp_path / "overlays").iterdir())) == 1


def test_report_of_a_real_run(run_folder, report):
    summary, html = report
    assert sorted(p.stem for p in summary.plots) == sorted(FAMILIES)  # no guard keys in this run: no guard plot
    for p in summary.plots:
        assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("loss", "loss/ce", "loss/coord", "eval_rollout/f1", "eval_rollout/precision", "eval_rollout/recall",
                 "rollout/parse_truncated_rate", "rollout/gen_new_tokens_p90", "rollout/max_new_tokens (cap)",
                 "stage2/channel_a", "stage2/channel_b", "stage2_ab/b_ratio_realized",
                 "rollout/desc_exact_acc_on_matched"):
        assert name in summary.curves, name
    for name in summary.curves:  # the page names every curve it draws
        assert name in html, name
    assert "Guard alarms: not logged by this run" in html
    # every dumped sample is drawn, embedded in the page (self-contained: no file reference)
    dumped = sum(len(json.loads(p.read_text())["samples"]) for p in (run_folder / "monitor_dumps").glob("*.json"))
    assert len(summary.overlays) == dumped > 0
    assert html.count("data:image/png;base64,") == len(summary.plots) + len(summary.overlays)
    assert summary.missing_images == 0  # synthetic images are drawn again from config.yaml
    assert "regenerated from config.yaml" in html


def test_an_untrained_run_is_flagged_at_the_token_cap(report):
    """The tiny untrained model talks until max_new_tokens: p90 at the cap is the seed's budget-saturation flag."""
    summary, html = report
    flags = html.split("<h2>Flags</h2>")[1].split("</section>")[0]
    assert "rollout/gen_new_tokens_p90 reaches max_new_tokens" in flags and summary.flags >= 1


def test_missing_image_is_counted_and_said(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run, ignore=shutil.ignore_patterns("events", "report"))
    (run / "config.yaml").write_text("custom: {}\n", encoding="utf-8")  # nothing to regenerate the images from
    dump = sorted((run / "monitor_dumps").glob("*.json"))[0]
    payload = json.loads(dump.read_text())
    parts = [p for m in payload["samples"][0]["messages_summary"] for p in m["parts"] if p["kind"] == "image"]
    parts[0]["image"] = "images/gone.png"
    dump.write_text(json.dumps(payload))
    summary = build_report(run, tmp_path / "out")
    assert summary.missing_images == len(summary.overlays) > 0
    html = (tmp_path / "out" / "report.html").read_text(encoding="utf-8")
    assert "image not found: images/gone.png" in html
    assert f"{summary.missing_images} of {len(summary.overlays)} overlay images missing" in html


def _run_copy(run_folder, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_folder, run, ignore=shutil.ignore_patterns("events", "report", "monitor_dumps"))
    return run


@pytest.mark.parametrize("case", ["no-folder", "no-log", "empty-log", "corrupt-line", "corrupt-dump"])
def test_bad_input_exits_2_naming_the_file(case, run_folder, tmp_path, capsys):
    run = _run_copy(run_folder, tmp_path)
    log = run / "logging.jsonl"
    if case == "no-folder":
        run, named = tmp_path / "nowhere", str(tmp_path / "nowhere")
    elif case == "no-log":
        log.unlink()
        named = f"{run}: not a run folder, no logging.jsonl"
    elif case == "empty-log":
        log.write_text("")
        named = f"{log}: empty"
    elif case == "corrupt-line":
        lines = log.read_text(encoding="utf-8").splitlines()
        log.write_text("\n".join([lines[0], '{"schema_version": 1, "mode": "train", "step": 1, "time": 0, "metr',
                                  *lines[1:]]) + "\n")
        named = f"{log}:2"
    else:
        (run / "monitor_dumps").mkdir()
        (run / "monitor_dumps" / "step_000001.json").write_text("{not json")
        named = str(run / "monitor_dumps" / "step_000001.json")
    assert main([str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err
    assert named in err, err
