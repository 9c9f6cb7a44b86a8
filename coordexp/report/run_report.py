"""The run report: one HTML page (+ PNGs) of a run folder's curves and monitor-dump overlays.

Written to ``<out>/report.html`` with ``<out>/plots/*.png`` and ``<out>/overlays/*.png`` beside it
(``out`` defaults to ``<run>/report``); the page embeds every image, so it can be moved on its own.
Input problems are ``CoordexpError``s naming the file (and line): a folder that is no run folder, an
empty or corrupt ``logging.jsonl``, a corrupt dump. A missing image is not an error: it is counted.
"""

from __future__ import annotations

from pathlib import Path

import attrs

from coordexp.errors import DataError, TelemetryError
from coordexp.report import curves, dumps
from coordexp.report.page import Level, Page
from coordexp.runfolder import CONFIG_FILE
from coordexp.telemetry.sinks import LOG_FILE, read_log

DEFAULT_OVERLAYS = 24  # samples drawn; a dump-heavy run would otherwise make a page of hundreds of images


@attrs.frozen
class ReportSummary:
    html: Path
    plots: tuple[Path, ...]
    overlays: tuple[Path, ...]
    curves: tuple[str, ...]  # every curve drawn, by label
    missing_images: int
    flags: int


def load_records(run: Path) -> list:
    if not run.is_dir():
        raise DataError(f"{run}: not a folder; give a run folder (<output_dir>/<run_name>/ with {LOG_FILE})")
    log_path = run / LOG_FILE
    if not log_path.is_file():
        hint = " (it has a config.yaml: the run has not logged yet)" if (run / CONFIG_FILE).is_file() else ""
        raise DataError(f"{run}: not a run folder, no {LOG_FILE}{hint}; give <output_dir>/<run_name>/")
    records = read_log(log_path)  # TelemetryError names file:line
    if not any(r.mode in ("train", "eval") for r in records):
        raise TelemetryError(f"{log_path}: empty, no train or eval record; the run logged nothing yet")
    return records


def _curve_section(page: Page, series: curves.Series, out: Path) -> tuple[list[Path], list[str]]:
    sec = page.section("Training curves", intro=f"From {LOG_FILE}; dashed lines are evaluations, the dotted "
                                                "black line the max_new_tokens cap.")
    flags = curves.flags(series)
    plots, names = [], []
    for family in curves.FAMILIES:
        path, drawn = curves.plot_family(family, series, out / "plots")
        if path is None:
            absent = ", ".join(family.expected) or "no key of this family"
            sec.text(f"{family.title}: not logged by this run ({absent}).")
            continue
        plots.append(path)
        names += drawn
        sec.image(path, caption=f"{family.title}: {', '.join(drawn)}")
        zero = curves.always_zero(family, series)
        if zero:
            sec.text(f"{family.title}, 0 at every logged step (not drawn): {', '.join(zero)}.")
        for slug, level, text in flags:
            if slug == family.slug:
                sec.flag(level, text)
    for slug, level, text in flags:
        if slug == "values":
            sec.flag(level, text)
    return plots, names


def _last_values(page: Page, series: curves.Series) -> None:
    rows = [[mode, key, len(points), points[-1][0], points[-1][1]]
            for (mode, key), points in sorted(series.items())]
    page.section("Last values", intro="Every logged key: how many records carry it and its last value.").table(
        ["mode", "key", "records", "last step", "last value"], rows)


def _overlay_section(page: Page, run: Path, out: Path, limit: int, total: int) -> tuple[list[Path], int]:
    sec = page.section("GT vs prediction (monitor dumps)",
                       intro="Each panel: GT and the rollout's valid predictions after matching.")
    if total == 0:
        sec.text("No monitor dump in this run (custom.extra.rollout_matching.monitor_dump.enabled).")
        return [], 0
    paths, missing, rows = [], 0, []
    for ov in dumps.overlays(run, limit=limit):
        path = out / "overlays" / f"step_{ov.step:06d}_{len(paths):03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        ov.image.save(path)
        paths.append(path)
        missing += ov.missing
        stats = ov.stats
        rows.append([ov.step, ov.sample_id, stats.get("matched"), stats.get("valid_pred_objects"),
                     stats.get("gt_objects"), stats.get("parse_dropped_invalid"), ov.source])
        sec.image(path, caption=f"step {ov.step} {ov.sample_id}")
    if total > len(paths):
        sec.text(f"{len(paths)} of {total} dumped samples drawn (--max-overlays).")
    if missing:
        sec.flag(Level.WARN, f"{missing} of {len(paths)} overlay images missing (drawn on a grey canvas): "
                             "see the source column")
    sec.table(["step", "sample", "matched", "valid preds", "GT", "dropped", "image source"], rows)
    return paths, missing


def build_report(run: Path, out: Path | None = None, *, max_overlays: int = DEFAULT_OVERLAYS) -> ReportSummary:
    run = Path(run)
    records = load_records(run)
    dumped = dumps.count_samples(run)  # reads every dump first: a corrupt one fails before any plot is drawn
    out = Path(out) if out is not None else run / "report"
    series = curves.collect(records)
    page = Page(f"Run report: {run.name}", subtitle=f"{run} ({len(records)} log records)")
    plots, names = _curve_section(page, series, out)
    overlay_paths, missing = _overlay_section(page, run, out, max_overlays, dumped)
    _last_values(page, series)
    html = page.write(out / "report.html")
    return ReportSummary(html, tuple(plots), tuple(overlay_paths), tuple(names), missing, len(page.flags))
