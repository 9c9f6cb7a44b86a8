"""GT against one or more prediction sets, drawn on the sample's image (boxes and polygons).

A reader of a rollout wants to see at a glance which predictions found a GT object, which are false
positives and which GT objects were missed; each of those has its own colour (``COLOURS``) and the
legend under every panel names them. Coordinates are norm1000 bins, turned into pixels with the
project's rule (``coordexp.core.coords.bins_to_pixels``: ``k/999 * (dim-1)``) on the image's own size,
then scaled with the panel, so the overlay shows what the evaluator measured.

Usage::

    from coordexp.report.overlay import OverlayObject, PredictionSet, draw_overlay

    gt = [OverlayObject("cat", "bbox_2d", (100, 100, 400, 500))]
    preds = PredictionSet("rollout", [OverlayObject("cat", "bbox_2d", (110, 90, 420, 480)),
                                      OverlayObject("dog", "poly", (600, 600, 900, 600, 750, 900))],
                          matches=[(0, 0)])                      # (pred index, GT index)
    panel = draw_overlay(image, gt, [preds], width=640, height=480)   # a PIL image; image may be None
    panel.save("overlay.png")

Several prediction sets (a run against its replay under another config, two checkpoints) give one
panel each, side by side, all over the same GT. ``image=None`` (a missing or in-memory image) draws
on a grey canvas of ``width`` x ``height`` and says so in the panel title; callers count it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence

import attrs
from PIL import Image, ImageDraw, ImageFont

from coordexp.core.coords import bins_to_pixels
from coordexp.core.keys import GeomType

PANEL_MIN_SIDE = 384  # px: small images (64 px synthetic shapes) are scaled up so boxes and labels stay readable
PANEL_MAX_SIDE = 768  # px: large photos are scaled down so a page of overlays stays light
LINE_WIDTH = 3
LEGEND_ROW = 16  # px per legend line
CANVAS_GREY = (200, 200, 200)


class Status(enum.StrEnum):
    """What the match made of an object."""

    GT_MATCHED = "GT matched"
    PRED_MATCHED = "pred matched"
    FP = "FP (unmatched pred)"
    FN = "FN (missed GT)"


COLOURS: Mapping[Status, tuple[int, int, int]] = {
    Status.GT_MATCHED: (0, 170, 0),  # green
    Status.PRED_MATCHED: (0, 90, 255),  # blue
    Status.FP: (230, 0, 0),  # red
    Status.FN: (255, 150, 0),  # orange
}


@attrs.frozen
class OverlayObject:
    desc: str
    geom_type: str  # "bbox_2d" | "poly"
    points: tuple[int, ...] = attrs.field(converter=tuple)  # norm1000 bins x1, y1, x2, y2 / x, y, ...


@attrs.frozen
class PredictionSet:
    """One set of predictions over the same GT, with its match (pairs of indices)."""

    name: str
    objects: tuple[OverlayObject, ...] = attrs.field(converter=tuple)
    matches: tuple[tuple[int, int], ...] = attrs.field(default=(), converter=lambda v: tuple(map(tuple, v)))


def statuses(pset: PredictionSet, n_gt: int) -> tuple[list[Status], list[Status]]:
    """(GT statuses, prediction statuses): matched where a pair names it, else FN / FP."""
    matched_gt = {g for _, g in pset.matches}
    matched_pred = {p for p, _ in pset.matches}
    gt = [Status.GT_MATCHED if i in matched_gt else Status.FN for i in range(n_gt)]
    pred = [Status.PRED_MATCHED if i in matched_pred else Status.FP for i in range(len(pset.objects))]
    return gt, pred


def _panel_scale(width: int, height: int) -> float:
    side = max(width, height)
    if side < PANEL_MIN_SIDE:
        return PANEL_MIN_SIDE / side
    if side > PANEL_MAX_SIDE:
        return PANEL_MAX_SIDE / side
    return 1.0


def _shape(obj: OverlayObject, *, width: int, height: int, scale: float) -> list[tuple[float, float]] | None:
    """Panel-pixel vertices of the object, or None when its points cannot be drawn (odd count, bad type)."""
    if len(obj.points) % 2 or len(obj.points) < 4:
        return None
    px = bins_to_pixels([int(v) for v in obj.points], width=width, height=height)
    xy = [(px[i] * scale, px[i + 1] * scale) for i in range(0, len(px), 2)]
    if obj.geom_type == GeomType.BBOX and len(xy) == 2:
        (x1, y1), (x2, y2) = xy
        return [(x1, y1), (x2, y1), (x2, y2), (x1, y2)]
    if obj.geom_type == GeomType.POLY and len(xy) >= 3:
        return xy
    return None


def _draw_object(draw: ImageDraw.ImageDraw, obj: OverlayObject, status: Status, *, width: int, height: int,
                 scale: float, font: ImageFont.ImageFont) -> bool:
    vertices = _shape(obj, width=width, height=height, scale=scale)
    if vertices is None:
        return False
    colour = COLOURS[status]
    draw.polygon(vertices, outline=colour, width=LINE_WIDTH)
    x = min(v[0] for v in vertices)
    label = obj.desc.encode("ascii", "backslashreplace").decode("ascii")[:40]
    if status in (Status.GT_MATCHED, Status.FN):  # GT labels above the shape, prediction labels below it
        y = max(0.0, min(v[1] for v in vertices) - 12)
    else:
        y = max(v[1] for v in vertices) + 1
    draw.text((x + LINE_WIDTH, y), label, fill=colour, font=font)
    return True


def draw_panel(image: Image.Image | None, gt: Sequence[OverlayObject], pset: PredictionSet, *, width: int,
               height: int, title: str = "") -> Image.Image:
    """One panel: ``image`` (or a grey canvas), GT and ``pset`` in their statuses' colours, title and legend."""
    scale = _panel_scale(width, height)
    w, h = max(1, round(width * scale)), max(1, round(height * scale))
    base = (image.convert("RGB").resize((w, h)) if image is not None else Image.new("RGB", (w, h), CANVAS_GREY))
    font = ImageFont.load_default()
    head = title or pset.name
    if image is None:
        head += " [image missing: grey canvas]"
    legend = list(Status)
    panel = Image.new("RGB", (w, h + LEGEND_ROW * (len(legend) + 2)), (255, 255, 255))
    draw = ImageDraw.Draw(panel)
    draw.text((2, 2), head, fill=(0, 0, 0), font=font)
    gt_status, pred_status = statuses(pset, len(gt))
    canvas = ImageDraw.Draw(base)
    undrawn = 0
    for obj, st in [*zip(gt, gt_status), *zip(pset.objects, pred_status)]:
        undrawn += not _draw_object(canvas, obj, st, width=width, height=height, scale=scale, font=font)
    panel.paste(base, (0, LEGEND_ROW))
    y = h + LEGEND_ROW + 2
    for st in legend:
        draw.rectangle([4, y + 3, 14, y + 12], fill=COLOURS[st])
        count = sum(s is st for s in (*gt_status, *pred_status))
        draw.text((20, y), f"{st.value}: {count}", fill=(0, 0, 0), font=font)
        y += LEGEND_ROW
    if undrawn:
        draw.text((4, y), f"{undrawn} object(s) with undrawable points", fill=(0, 0, 0), font=font)
    return panel


def draw_overlay(image: Image.Image | None, gt: Sequence[OverlayObject], sets: Sequence[PredictionSet], *,
                 width: int, height: int, title: str = "") -> Image.Image:
    """Panels of every prediction set over the same GT, side by side (one set: one panel)."""
    if not sets:
        sets = [PredictionSet("GT only", ())]
    panels = [draw_panel(image, gt, s, width=width, height=height,
                         title=f"{title} {s.name}".strip() if len(sets) > 1 or not title else title) for s in sets]
    gap = 8
    out = Image.new("RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), max(p.height for p in panels)),
                    (255, 255, 255))
    x = 0
    for p in panels:
        out.paste(p, (x, 0))
        x += p.width + gap
    return out


def objects_from_rows(rows: Sequence[Mapping[str, object]]) -> tuple[OverlayObject, ...]:
    """Objects from monitor-dump rows (``{"desc", "geom_type", "points", ...}``, as ``MonitorObject`` writes)."""
    return tuple(OverlayObject(str(r.get("desc", "")), str(r.get("geom_type", "")),
                               tuple(int(v) for v in r.get("points", ()))) for r in rows)  # type: ignore[union-attr]


def monitor_sample_sets(sample: Mapping[str, object], *, name: str = "rollout") -> tuple[
        tuple[OverlayObject, ...], PredictionSet]:
    """(GT, prediction set) of one monitor-dump sample (``coordexp.telemetry.monitor.MonitorSample`` JSON)."""
    gt = objects_from_rows(sample.get("gt_objects", ()))  # type: ignore[arg-type]
    preds = objects_from_rows(sample.get("pred_objects", ()))  # type: ignore[arg-type]
    pairs = [(int(m["pred_i"]), int(m["gt_i"])) for m in sample.get("matches", ())]  # type: ignore[union-attr,index]
    return gt, PredictionSet(name, preds, pairs)
