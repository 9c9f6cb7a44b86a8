"""The replay's outputs: metrics.json, samples.jsonl, report.md, report.html and PNG plots.

The HTML page is ``coordexp.report.page`` (the shared page writer); the plots are matplotlib bar
charts and histograms of the diagnosis figures. report.md carries the same numbers as text, so a
report can be pasted into an issue.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordexp.core.health import SlotClass
from coordexp.core.parse_records import DropReason
from coordexp.replay.diagnosis import Diagnosis
from coordexp.replay.pipeline import ReplayRun
from coordexp.report.page import Level, Page, cell

PLOTS = ("dropped.png", "slot_tokens.png", "same_desc.png", "gen_tokens.png")
OVERLAYS = 4  # samples drawn GT vs prediction: the ones with the most false positives


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def metrics_payload(run: ReplayRun, diag: Diagnosis) -> dict[str, float]:
    """One flat object: the replayed training keys, then every diagnosis figure (finite numbers only)."""
    out = {k: float(v) for k, v in run.metrics.items() if k.startswith(("rollout/", "eval_rollout/", "packing/"))}
    if "eval_rollout/matched_maskiou_mean" in out:  # the name the runbook and the issue use
        out["eval_rollout/matched_iou_mean"] = out["eval_rollout/matched_maskiou_mean"]
    out.update(diag.figures)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _bar(ax: Any, labels: Sequence[str], values: Sequence[float], title: str) -> None:
    ax.bar(range(len(labels)), values, color="#4477aa")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_title(title, fontsize=10)


def write_plots(out: Path, run: ReplayRun, diag: Diagnosis) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig = diag.figures
    rows = [r for r in diag.rows if "valid_json" in r]
    written = []
    plots: list[tuple[str, Any]] = [
        ("dropped.png", lambda ax: _bar(ax, [r.value for r in DropReason],
                                        [fig[f"diagnosis/dropped/{r.value}"] for r in DropReason], "dropped objects by reason")),
        ("slot_tokens.png", lambda ax: _bar(ax, [c.value for c in SlotClass],
                                            [fig[f"diagnosis/slot_tokens/{c.value}"] for c in SlotClass],
                                            "non-coord geometry slot values")),
        ("same_desc.png", lambda ax: (ax.hist([r["max_same_desc"] for r in rows] or [0], bins=20, color="#aa7744"),
                                      ax.set_title("max same desc per sample", fontsize=10))),
    ]
    if run.input.tokens_known:
        cap = fig["diagnosis/max_new_tokens"]
        plots.append(("gen_tokens.png", lambda ax: (
            ax.hist([r["completion_tokens"] for r in diag.rows] or [0], bins=20, color="#44aa77"),
            ax.axvline(cap, color="red", linestyle="--", label=f"max_new_tokens {cap:g}"), ax.legend(fontsize=8),
            ax.set_title("generated tokens per rollout", fontsize=10))))
    for name, draw in plots:
        figure, ax = plt.subplots(figsize=(5, 3.2))
        draw(ax)
        figure.tight_layout()
        figure.savefig(out / name, dpi=80)
        plt.close(figure)
        written.append(out / name)
    return written


def _image(path: object, base: Path) -> Any:
    """The sample's image when it can be read (relative paths against the input's folder), else None (grey)."""
    from PIL import Image

    if isinstance(path, Image.Image) or not isinstance(path, (str, os.PathLike)) or not str(path):
        return path if isinstance(path, Image.Image) else None
    where = Path(path) if Path(path).is_absolute() else base / path
    try:
        return Image.open(where) if where.is_file() else None
    except OSError:
        return None


def write_overlays(out: Path, run: ReplayRun, *, limit: int = OVERLAYS) -> list[Path]:
    """GT vs the predictions Match saw (matched / FP / FN colours) for the worst samples."""
    from coordexp.report.overlay import OverlayObject, PredictionSet, draw_overlay

    drawn = [r for r in run.samples if r.item.matched is not None and r.item.view is not None]
    drawn.sort(key=lambda r: (-len(r.item.matched.fp_pred_indices), -len(r.item.matched.fn_gt_indices)))
    base = run.input.path if run.input.path.is_dir() else run.input.path.parent
    written = []
    for i, r in enumerate(drawn[:limit]):
        item = r.item
        gt = [OverlayObject(g.desc, g.geom_type.value, g.points) for g in item.target_sample.gt]
        preds = PredictionSet("rollout", [OverlayObject(o.desc, o.geom_type.value, o.coord_bins)
                                          for o in item.view.parse.valid_objects], matches=item.matched.matched_pairs)
        width, height = item.sample.width or 1000, item.sample.height or 1000
        source = r.sample.image or (item.sample.images[0] if item.sample.images else None)
        panel = draw_overlay(_image(source, base), gt, [preds], width=width, height=height,
                             title=r.sample.sample_id[-60:])
        path = out / f"overlay_{i}.png"
        panel.save(path)
        written.append(path)
    return written


def _summary_rows(diag: Diagnosis) -> list[list[object]]:
    return [[f.key, f.value, "ok" if f.healthy else "OUT OF RANGE", f.seed_says, "" if f.healthy else f.cure]
            for f in diag.findings]


def render_markdown(run: ReplayRun, diag: Diagnosis, metrics: dict[str, float]) -> str:
    lines = [f"# Replay diagnosis: {run.input.path}", "",
             f"- format: `{run.input.format}`; samples: {int(diag.figures['diagnosis/samples'])}",
             f"- exact: {diag.exact}", f"- estimated: {diag.estimated}", "", "## Health checks (seed 000)", "",
             "| figure | value | status | healthy (seed) | config-first cure |", "|---|---:|---|---|---|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in _summary_rows(diag)]
    if diag.top_slot_values:
        lines += ["", "## Most frequent non-coord slot values", "", "| value | class | count |", "|---|---|---:|"]
        lines += [f"| {json.dumps(v, ensure_ascii=True)} | {c} | {n} |" for v, c, n in diag.top_slot_values]
    lines += ["", "## Figures", "", "| key | value |", "|---|---:|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in sorted(metrics.items()) if k.startswith("diagnosis/")]
    lines += ["", "## Replayed metrics", "", "| key | value |", "|---|---:|"]
    lines += [f"| {k} | {cell(v)} |" for k, v in sorted(metrics.items()) if not k.startswith("diagnosis/")]
    lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in PLOTS if p != "gen_tokens.png" or run.input.tokens_known), ""]
    return "\n".join(lines)


def render_html(run: ReplayRun, diag: Diagnosis, metrics: dict[str, float], plots: Sequence[Path]) -> Page:
    page = Page(f"Replay diagnosis: {run.input.path.name}", subtitle=f"format {run.input.format}; {diag.exact} exact; "
                f"estimated: {diag.estimated}")
    health = page.section("Health checks (seed 000)")
    for f in diag.findings:
        if not f.healthy:
            health.flag(Level.BAD, f"{f.key} = {cell(f.value)} (healthy: {f.seed_says}); cure: {f.cure}")
    health.table(["figure", "value", "status", "healthy (seed)", "config-first cure"], _summary_rows(diag))
    if diag.top_slot_values:
        page.section("Most frequent non-coord slot values").table(
            ["value", "class", "count"], [[json.dumps(v, ensure_ascii=False), c, n] for v, c, n in diag.top_slot_values])
    figs = page.section("Plots")
    for p in plots:
        figs.image(p, caption=p.stem)
    page.section("All figures").table(["key", "value"], sorted(metrics.items()))
    return page


def write_outputs(out: Path, run: ReplayRun, diag: Diagnosis) -> dict[str, float]:
    """Every output file in ``out``; returns the metrics.json object."""
    out.mkdir(parents=True, exist_ok=True)
    metrics = metrics_payload(run, diag)
    _write(out / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
    _write(out / "samples.jsonl", "".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in diag.rows))
    _write(out / "replay_log.jsonl", "".join(json.dumps(r, sort_keys=True) + "\n" for r in run.logged))
    _write(out / "trace.jsonl", "".join(json.dumps({"step": s, "mode": m, "trace": list(t),
                                                    **({"targets_sha": run.step_digests[s]} if m == "train" and s in run.step_digests else {})},
                                                   sort_keys=True) + "\n" for s, m, t in run.traces))
    plots = write_plots(out, run, diag) + write_overlays(out, run)
    _write(out / "report.md", render_markdown(run, diag, metrics))
    render_html(run, diag, metrics, plots).write(out / "report.html")
    return metrics
