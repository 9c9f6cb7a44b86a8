"""Shapes on the norm1000 canvas and their overlap (IoU), exact or rasterised.

Every shape is clamped to the canvas ``[0, 999]`` before any measurement: parsed rollouts cannot hold
other values, but GT converters and hand-written fixtures can, and clamping keeps every mode and the
candidate pruning on the same canvas.

Exact mode (the default) is analytic for bbox/bbox pairs (continuous coordinates, no ``+1``) and uses
shapely polygon clipping when a polygon is involved. Identical tiny boxes therefore overlap fully,
which the legacy raster could not see (reference 15.1 W15). Zero-area shapes (a point or a segment)
have no area to compare, so the rule is: two zero-area shapes with the same set of vertices have IoU 1
(they are the same object), every other pair with a zero-area member has IoU 0.

Raster mode keeps the legacy numbers for comparison: it is pycocotools' polygon rasteriser and RLE
IoU, as the legacy called them (reference 5.3), with each shape rasterised once however many pairs
it is in (the legacy rasterised both shapes for every pair, reference 15.3 H3).
"""

from __future__ import annotations

import enum
import warnings
from collections.abc import Sequence

import attrs
import numpy as np
import shapely

from coordexp.core.coordjson import GeomType
from coordexp.core.coords import MAX_BIN
from coordexp.errors import DataError


class IouMode(enum.StrEnum):
    """How pair IoU is measured: analytic/polygon clipping, or the legacy-compatible raster."""

    EXACT = "exact"
    RASTER = "raster"


def _check_points(instance: Shape, attribute: attrs.Attribute, points: tuple[int, ...]) -> None:
    if not {type(p) for p in points} <= {int}:  # bool and numpy ints are refused too
        raise DataError(f"shape points must be integers (norm1000 bins), got {points!r}")
    if instance.geom_type is GeomType.BBOX and len(points) != 4:
        raise DataError(f"a bbox_2d has exactly 4 numbers (x1, y1, x2, y2), got {len(points)}")
    if instance.geom_type is GeomType.POLY and (len(points) < 6 or len(points) % 2):
        raise DataError(f"a poly needs an even count >= 6 of numbers (3+ vertices), got {len(points)}")


@attrs.frozen
class Shape:
    """One object's geometry as written by the model or the GT."""

    geom_type: GeomType = attrs.field(converter=GeomType)
    points: tuple[int, ...] = attrs.field(converter=tuple, validator=_check_points)  # norm1000 x,y,...


def _clamped(shape: Shape) -> np.ndarray:
    return np.clip(np.asarray(shape.points, dtype=np.float64), 0, MAX_BIN)


def _clamp(v: float) -> float:
    return float(MAX_BIN if v > MAX_BIN else 0 if v < 0 else v)


def aabb(shape: Shape) -> tuple[float, float, float, float]:
    """Axis-aligned bounds ``(x1, y1, x2, y2)`` (norm1000 xyxy, clamped); reversed boxes are normalised.

    Plain Python on purpose: a shape has 4 to a few dozen numbers, where numpy's per-call overhead
    dominates (the matcher calls this for every pred and GT). Clamping after min/max equals clamping
    each value first, since clamping is monotone.
    """
    xs, ys = shape.points[0::2], shape.points[1::2]
    return (_clamp(min(xs)), _clamp(min(ys)), _clamp(max(xs)), _clamp(max(ys)))


def vertices(shape: Shape) -> np.ndarray:
    """Outline as an ``(n, 2)`` array (norm1000, clamped); a bbox becomes its 4 corners."""
    if shape.geom_type is GeomType.BBOX:
        x1, y1, x2, y2 = aabb(shape)
        return np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]])
    return _clamped(shape).reshape(-1, 2)


def _same_vertex_set(a: Shape, b: Shape) -> bool:
    return {tuple(v) for v in vertices(a).tolist()} == {tuple(v) for v in vertices(b).tolist()}


# ---------------------------------------------------------------------------------------------
# Vectorised box arithmetic (candidate pruning and bbox/bbox exact IoU)


def aabb_array(shapes: Sequence[Shape]) -> np.ndarray:
    """``(n, 4)`` float array of the shapes' AABBs (norm1000 xyxy)."""
    return np.array([aabb(s) for s in shapes], dtype=np.float64).reshape(-1, 4)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Analytic IoU of boxes ``a`` and ``b`` (norm1000 xyxy, ``[..., 4]``), broadcasting elementwise.

    Continuous coordinates, no ``+1``. Zero-area boxes follow the module rule: identical ones give 1.
    ``box_iou(a[:, None], b[None])`` is the full (n, m) matrix; ``box_iou(a[i], b[j])`` scores pairs.
    """
    # element-wise products, not np.prod: numpy's reduction wrappers cost more than the maths here
    wh = np.maximum(np.minimum(a[..., 2:], b[..., 2:]) - np.maximum(a[..., :2], b[..., :2]), 0.0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    union = area_a + area_b - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    identical_degenerate = (area_a == 0) & (area_b == 0) & (a == b).all(axis=-1)
    return np.where(identical_degenerate, 1.0, iou)


def box_pair_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """``box_iou`` of one pair in plain Python (norm1000 xyxy, ordered corners), same rules.

    For callers that score pairs one at a time (the duplicate stop rule checks each object as it
    closes), where numpy's per-call overhead would cost more than the arithmetic.
    """
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    area_b = (b[2] - b[0]) * (b[3] - b[1])
    if area_a == 0 and area_b == 0:
        return 1.0 if tuple(a) == tuple(b) else 0.0
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


def center_dist2_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Squared distance between box centres, (n, m); the pruning fallback when no AABB overlaps."""
    ca = (a[:, :2] + a[:, 2:]) / 2
    cb = (b[:, :2] + b[:, 2:]) / 2
    return np.sum((ca[:, None, :] - cb[None, :, :]) ** 2, axis=2)


# ---------------------------------------------------------------------------------------------
# Exact polygon IoU


@attrs.frozen
class ShapePolygon:
    """A shape as a valid shapely geometry; ``repaired`` says shapely had to fix its outline."""

    geom: shapely.Geometry
    area: float
    repaired: bool


def to_polygon(shape: Shape) -> ShapePolygon:
    """Shapely geometry of a shape, repairing self-intersections with ``make_valid``.

    Only the polygonal part of a repaired outline counts (a collapsed spike has no area). The caller
    learns about the repair through ``repaired`` and is expected to count it.
    """
    if shape.geom_type is GeomType.BBOX:
        geom = shapely.box(*aabb(shape))
        return ShapePolygon(geom, float(geom.area), False)
    geom = shapely.Polygon(vertices(shape))
    if geom.is_valid:
        return ShapePolygon(geom, float(geom.area), False)
    fixed = shapely.make_valid(geom)
    parts = [g for g in shapely.get_parts(fixed) if g.geom_type in ("Polygon", "MultiPolygon")]
    merged = shapely.union_all(parts) if parts else shapely.Polygon()
    return ShapePolygon(merged, float(merged.area), True)


def polygon_iou(a: ShapePolygon, b: ShapePolygon) -> float:
    """Exact IoU of two prepared polygons (zero-area members give 0; identity is the caller's test)."""
    if a.area <= 0 or b.area <= 0:
        return 0.0
    inter = float(shapely.intersection(a.geom, b.geom).area)
    return inter / (a.area + b.area - inter)


# ---------------------------------------------------------------------------------------------
# Raster IoU (legacy-compatible)


def _raster_rle(shape: Shape, resolution: int) -> dict:
    """pycocotools RLE of a shape on an R x R canvas: clamped outline scaled by ``(R-1)/999``."""
    from pycocotools import mask as mask_utils  # lazy: only raster mode needs it

    outline = (vertices(shape) * ((resolution - 1) / MAX_BIN)).ravel().tolist()
    return mask_utils.merge(mask_utils.frPyObjects([outline], resolution, resolution))


def raster_mask(shape: Shape, resolution: int) -> np.ndarray:
    """Boolean ``(R, R)`` mask (row = y, column = x) of a shape, as raster mode sees it.

    The coverage rule is pycocotools' (the legacy's): objects thinner than about half a pixel cover
    nothing, which is why exact mode is the default.
    """
    from pycocotools import mask as mask_utils

    _check_resolution(resolution)
    with warnings.catch_warnings():  # pycocotools' decode trips a numpy 2 copy-keyword deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        return mask_utils.decode(_raster_rle(shape, resolution)).astype(bool)


def _check_resolution(resolution: int) -> None:
    if resolution < 1:
        raise DataError(f"rollout_matching.maskiou_resolution must be >= 1 pixel, got {resolution}")


def iou(a: Shape, b: Shape, *, mode: IouMode | str = IouMode.EXACT, resolution: int = 256) -> float:
    """IoU of two shapes in the given mode (``resolution`` only matters for raster)."""
    idx = np.zeros(1, dtype=np.int64)
    return float(pair_ious([a], [b], idx, idx, mode=mode, resolution=resolution).ious[0])


# ---------------------------------------------------------------------------------------------
# Scoring many pairs at once (the matcher's candidate pairs)


@attrs.frozen
class PairIous:
    """IoU of each requested pair, plus how many distinct polygons needed a validity repair."""

    ious: np.ndarray  # float64, one per pair
    repaired_polygons: int


def pair_ious(
    a: Sequence[Shape],
    b: Sequence[Shape],
    ai: np.ndarray,
    bi: np.ndarray,
    *,
    mode: IouMode | str = IouMode.EXACT,
    resolution: int = 256,
    aabb_iou: np.ndarray | None = None,
) -> PairIous:
    """IoU of the pairs ``(a[ai[n]], b[bi[n]])``.

    Each shape is converted (to a polygon or a mask) once however many pairs it is in, which is what
    made the legacy matcher slow (reference 15.3 H3); bbox/bbox pairs in exact mode are one numpy call.
    ``aabb_iou`` is the ``(len(a), len(b))`` AABB IoU matrix when the caller already has it (the
    matcher prunes candidates with it); for two boxes it is the exact IoU.
    """
    mode = IouMode(mode)
    ai, bi = np.asarray(ai, dtype=np.int64), np.asarray(bi, dtype=np.int64)
    if mode is IouMode.RASTER:
        return PairIous(_raster_pairs(a, b, ai, bi, resolution), 0)
    all_boxes = all(s.geom_type is GeomType.BBOX for s in a) and all(s.geom_type is GeomType.BBOX for s in b)
    if all_boxes and aabb_iou is not None:  # the common case: the matcher's pruning matrix is the answer
        return PairIous(aabb_iou[ai, bi], 0)
    out = np.zeros(len(ai), dtype=np.float64)
    is_box_a = np.array([s.geom_type is GeomType.BBOX for s in a], dtype=bool)
    is_box_b = np.array([s.geom_type is GeomType.BBOX for s in b], dtype=bool)
    both_box = is_box_a[ai] & is_box_b[bi] if len(ai) else np.zeros(0, dtype=bool)
    if both_box.any():
        if aabb_iou is not None:
            out[both_box] = aabb_iou[ai[both_box], bi[both_box]]
        else:
            out[both_box] = box_iou(aabb_array(a)[ai[both_box]], aabb_array(b)[bi[both_box]])
    rest = np.flatnonzero(~both_box)
    if len(rest) == 0:
        return PairIous(out, 0)
    polys_a = {int(i): to_polygon(a[i]) for i in np.unique(ai[rest])}
    polys_b = {int(j): to_polygon(b[j]) for j in np.unique(bi[rest])}
    for n in rest:
        i, j = int(ai[n]), int(bi[n])
        pa, pb = polys_a[i], polys_b[j]
        if pa.area <= 0 and pb.area <= 0:
            out[n] = 1.0 if _same_vertex_set(a[i], b[j]) else 0.0
        else:
            out[n] = polygon_iou(pa, pb)
    repaired = sum(p.repaired for p in polys_a.values()) + sum(p.repaired for p in polys_b.values())
    return PairIous(out, repaired)


def _raster_pairs(
    a: Sequence[Shape], b: Sequence[Shape], ai: np.ndarray, bi: np.ndarray, resolution: int
) -> np.ndarray:
    """RLE IoU of the pairs (non-crowd, as the legacy): each shape rasterised once, one IoU call."""
    from pycocotools import mask as mask_utils

    _check_resolution(resolution)
    if len(ai) == 0:
        return np.zeros(0, dtype=np.float64)
    ua, ra = np.unique(ai, return_inverse=True)
    ub, rb = np.unique(bi, return_inverse=True)
    rles_a = [_raster_rle(a[int(i)], resolution) for i in ua]
    rles_b = [_raster_rle(b[int(j)], resolution) for j in ub]
    table = np.asarray(mask_utils.iou(rles_a, rles_b, [0] * len(rles_b)), dtype=np.float64).reshape(len(ua), len(ub))
    return table[ra, rb]
