"""Synthetic shapes: a detection set generated on the fly, for the demo and for tests.

    synthetic://shapes?n=64&seed=0[&size=64][&min_objects=1][&max_objects=3]
                      [&min_extent=0.25][&max_extent=0.5][&noise=0]

Each sample is a square RGB image of ``size`` pixels on a dark, slightly varying background with
``min_objects..max_objects`` filled shapes (rectangles, ellipses, triangles) in saturated colours, and
one object per shape whose desc names colour and shape ("red square", "blue circle", "green
triangle"). The task is honest: the boxes are the tight pixel bounds of what was drawn (measured on the
shape's own mask, so a triangle's box is its real extent), shapes never overlap (a box is never hidden)
and nothing but the pixels says where they are. Positions and sizes are continuous, not snapped to the
vision patch grid.

Generation is deterministic by ``(seed, index)``: sample ``k`` of ``n=8`` equals sample ``k`` of
``n=1000`` with the same seed and parameters, so a set can grow without changing its head, and train /
val sets are disjoint by using different seeds.

Coordinates are norm1000 bins with the contract's pixel rule (``coordexp.core.coords.pixel_to_bin``).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

import attrs
import numpy as np
from PIL import Image, ImageDraw

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.coords import pixel_to_bin
from coordexp.errors import ConfigError

if TYPE_CHECKING:
    from coordexp.data.records import Sample

GENERATOR = "shapes"
URI_PREFIX = f"synthetic://{GENERATOR}"

# Saturated colours far apart in RGB and from the dark background; names are one or two BPE pieces.
COLOURS: Mapping[str, tuple[int, int, int]] = {
    "red": (230, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 240),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "orange": (250, 140, 20),
}
SHAPES = ("square", "circle", "triangle")  # desc words of rectangle, ellipse, triangle
_PLACEMENT_TRIES = 50  # per object; a crowded image simply gets fewer objects (never below min_objects)


def _unit(value: float) -> bool:
    return 0.0 < value <= 1.0


@attrs.frozen
class _Param:
    kind: type
    default: object
    valid: Callable[[object], bool]
    rule: str  # says what `valid` checks, for the error message


PARAMS: Mapping[str, _Param] = {
    "size": _Param(int, 64, lambda v: 16 <= v <= 1024, "an int in 16..1024 (pixels per side)"),
    "min_objects": _Param(int, 1, lambda v: 0 <= v <= 8, "an int in 0..8"),
    "max_objects": _Param(int, 3, lambda v: 1 <= v <= 8, "an int in 1..8"),
    "min_extent": _Param(float, 0.25, _unit, "a float in (0, 1] (fraction of the side)"),
    "max_extent": _Param(float, 0.5, _unit, "a float in (0, 1] (fraction of the side)"),
    "noise": _Param(int, 0, lambda v: 0 <= v <= 64, "an int in 0..64 (max per-pixel noise, 0 = off)"),
}


@attrs.frozen
class ShapesParams:
    """The resolved generator parameters (see the module docstring for their meaning)."""

    size: int  # px per side
    min_objects: int
    max_objects: int
    min_extent: float  # fraction of the side, per shape axis
    max_extent: float
    noise: int  # max abs per-pixel noise added to the image, 0 = none


def _coerce(name: str, raw: object) -> object:
    spec = PARAMS[name]
    try:
        value = spec.kind(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{URI_PREFIX}: parameter {name}={raw!r} must be {spec.rule}") from exc
    if isinstance(raw, float) and spec.kind is int and raw != value:
        raise ConfigError(f"{URI_PREFIX}: parameter {name}={raw!r} must be {spec.rule}")
    if not spec.valid(value):
        raise ConfigError(f"{URI_PREFIX}: parameter {name}={raw!r} must be {spec.rule}")
    return value


def resolve_params(params: Mapping[str, object]) -> ShapesParams:
    """Defaults plus ``params`` (URI strings or numbers), validated; unknown names are an error."""
    unknown = sorted(set(params) - set(PARAMS))
    if unknown:
        raise ConfigError(
            f"{URI_PREFIX}: unknown parameter(s) {unknown}; allowed: n, seed, {', '.join(PARAMS)}"
        )
    values = {name: _coerce(name, params.get(name, spec.default)) for name, spec in PARAMS.items()}
    resolved = ShapesParams(**values)
    if resolved.min_objects > resolved.max_objects:
        raise ConfigError(
            f"{URI_PREFIX}: min_objects={resolved.min_objects} exceeds max_objects={resolved.max_objects}"
        )
    if resolved.min_extent > resolved.max_extent:
        raise ConfigError(
            f"{URI_PREFIX}: min_extent={resolved.min_extent} exceeds max_extent={resolved.max_extent}"
        )
    if round(resolved.min_extent * resolved.size) < 3:
        raise ConfigError(
            f"{URI_PREFIX}: min_extent={resolved.min_extent} of size={resolved.size} draws shapes under 3 px; "
            "raise size or min_extent"
        )
    return resolved


@attrs.frozen
class DrawnShape:
    """One drawn object: what it is and the tight pixel box of its pixels."""

    colour: str
    shape: str  # one of SHAPES
    box_px: tuple[int, int, int, int]  # pixel idx xyxy, inclusive

    @property
    def desc(self) -> str:
        return f"{self.colour} {self.shape}"


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int], gap: int) -> bool:
    return not (a[2] + gap < b[0] or b[2] + gap < a[0] or a[3] + gap < b[1] or b[3] + gap < a[1])


def _draw_one(shape: str, frame: tuple[int, int, int, int], size: int, rng: random.Random) -> np.ndarray:
    """The boolean mask of ``shape`` inside ``frame`` (pixel idx xyxy, inclusive)."""
    mask = Image.new("1", (size, size), 0)
    draw = ImageDraw.Draw(mask)
    x1, y1, x2, y2 = frame
    if shape == "square":
        draw.rectangle(frame, fill=1)
    elif shape == "circle":
        draw.ellipse(frame, fill=1)
    else:  # triangle: apex somewhere on the top edge, base on the bottom edge
        apex = rng.randint(x1, x2)
        draw.polygon([(apex, y1), (x2, y2), (x1, y2)], fill=1)
    return np.asarray(mask, dtype=bool)


def _tight_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(mask)
    return int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())


def _frame(p: ShapesParams, rng: random.Random) -> tuple[int, int, int, int]:
    lo, hi = max(3, round(p.min_extent * p.size)), max(3, round(p.max_extent * p.size))
    w, h = rng.randint(lo, hi), rng.randint(lo, hi)
    x1, y1 = rng.randint(0, p.size - w), rng.randint(0, p.size - h)
    return x1, y1, x1 + w - 1, y1 + h - 1


def render(p: ShapesParams, rng: random.Random) -> tuple[Image.Image, tuple[DrawnShape, ...]]:
    """One image and its shapes, drawn in placement order, from ``rng``."""
    base = rng.randint(10, 50)
    pixels = np.empty((p.size, p.size, 3), dtype=np.int16)
    pixels[...] = (base + rng.randint(-8, 8), base + rng.randint(-8, 8), base + rng.randint(-8, 8))
    want = rng.randint(p.min_objects, p.max_objects)
    shapes: list[DrawnShape] = []
    while len(shapes) < want:
        for _ in range(_PLACEMENT_TRIES):
            frame = _frame(p, rng)
            if not any(_overlaps(frame, s.box_px, gap=1) for s in shapes):
                break
        else:
            if len(shapes) >= p.min_objects:
                break
            raise ConfigError(
                f"{URI_PREFIX}: cannot place {p.min_objects} non-overlapping shapes of extent up to "
                f"{p.max_extent} on {p.size} px; lower min_objects or max_extent"
            )
        colour, shape = rng.choice(tuple(COLOURS)), rng.choice(SHAPES)
        mask = _draw_one(shape, frame, p.size, rng)
        pixels[mask] = COLOURS[colour]
        shapes.append(DrawnShape(colour, shape, _tight_box(mask)))
    if p.noise:
        noise = np.random.default_rng(rng.getrandbits(64)).integers(-p.noise, p.noise + 1, pixels.shape)
        pixels = pixels + noise
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    return image, tuple(shapes)


def gt_objects(shapes: tuple[DrawnShape, ...], size: int) -> tuple[GTObject, ...]:
    """The shapes as norm1000 GT boxes, in drawing order (index 1..N)."""
    return tuple(
        GTObject(i, s.desc, GeomType.BBOX, tuple(pixel_to_bin(v, size) for v in s.box_px))
        for i, s in enumerate(shapes, start=1)
    )


def sample_rng(seed: int, index: int) -> random.Random:
    """The RNG of one sample: independent of ``n`` (string seeds hash with SHA-512, stable across runs)."""
    return random.Random(f"{URI_PREFIX}:{seed}:{index}")


def source_uri(n: int, seed: int, params: Mapping[str, object], index: int) -> str:
    extra = "".join(f"&{k}={params[k]}" for k in PARAMS if k in params)
    return f"{URI_PREFIX}?n={n}&seed={seed}{extra}#{index}"


def synthetic_samples(n: int, seed: int, **params: object) -> list[Sample]:
    """``n`` shapes samples (in-memory PIL images, norm1000 boxes), deterministic by ``seed``.

    ``params`` are the optional URI parameters (strings as parsed from the URI, or numbers).
    """
    from coordexp.data.records import Sample

    n_val, seed_val = _coerce_count(n, "n"), _coerce_count(seed, "seed")
    p = resolve_params(params)
    out = []
    for k in range(n_val):
        image, shapes = render(p, sample_rng(seed_val, k))
        out.append(
            Sample(
                sample_id=f"shapes-{seed_val}-{k}",
                images=(image,),
                width=p.size,
                height=p.size,
                objects=gt_objects(shapes, p.size),
                source=source_uri(n_val, seed_val, params, k),
                metadata={"generator": GENERATOR, "seed": seed_val, "index": k},
            )
        )
    return out


def _coerce_count(value: object, name: str) -> int:
    try:
        out = int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{URI_PREFIX}: {name}={value!r} must be an int >= 0") from exc
    if out < 0 or (isinstance(value, float) and value != out):
        raise ConfigError(f"{URI_PREFIX}: {name}={value!r} must be an int >= 0")
    return out
