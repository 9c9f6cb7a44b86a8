"""The norm1000 coordinate contract: ``<|coord_k|>`` tokens, bins 0..999, floats k/999, pixels.

There is no bin 1000: a coordinate is one of 1000 bins and ``k/999`` maps bin 999 onto exactly 1.0.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

NUM_BINS = 1000
MAX_BIN = NUM_BINS - 1

# Leading zeros are tolerated (legacy behaviour); the value range is checked separately so that
# ``<|coord_1000|>`` is recognised as a coord-shaped string and rejected as out of range.
_COORD_RE = re.compile(r"<\|coord_(\d{1,4})\|>")


def coord_token(k: int) -> str:
    """The token string for bin ``k``."""
    if not isinstance(k, int) or isinstance(k, bool) or not 0 <= k <= MAX_BIN:
        raise ValueError(f"coord bin must be an int in 0..{MAX_BIN}, got {k!r}")
    return f"<|coord_{k}|>"


COORD_TOKENS: tuple[str, ...] = tuple(f"<|coord_{k}|>" for k in range(NUM_BINS))


def parse_coord_token(text: str) -> int | None:
    """Bin of a coord-token string, or None when ``text`` is not one (or is out of range)."""
    m = _COORD_RE.fullmatch(text)
    if m is None:
        return None
    k = int(m.group(1))
    return k if k <= MAX_BIN else None


def bin_to_float(k: int) -> float:
    """Bin -> normalised coordinate in [0, 1]."""
    if not 0 <= k <= MAX_BIN:
        raise ValueError(f"coord bin out of range 0..{MAX_BIN}: {k}")
    return k / MAX_BIN


def float_to_bin(c: float) -> int:
    """Normalised coordinate -> nearest bin, clamped to 0..999."""
    return min(MAX_BIN, max(0, round(MAX_BIN * c)))


def to_bin(value: object) -> int:
    """Accept a coord token string, an int, a decimal string or an integral float; return the bin.

    Raises ValueError naming the offending value, so record validation can report it.
    """
    if isinstance(value, bool):
        raise ValueError(f"coordinate must be a coord token or integer 0..{MAX_BIN}, got {value!r}")
    if isinstance(value, str):
        text = value.strip()
        # A plain decimal string ("3") is a number written as text; legacy records carry a few.
        k = int(text) if text.isascii() and text.isdigit() else parse_coord_token(text)
        if k is None or k > MAX_BIN:
            raise ValueError(f"not a coord token or integer in 0..{MAX_BIN}: {value!r}")
        return k
    if isinstance(value, int):
        k = value
    elif isinstance(value, float) and math.isfinite(value) and abs(value - round(value)) <= 1e-6:
        k = int(round(value))
    else:
        raise ValueError(f"coordinate must be a coord token or integer 0..{MAX_BIN}, got {value!r}")
    if not 0 <= k <= MAX_BIN:
        raise ValueError(f"coordinate out of range 0..{MAX_BIN}: {value!r}")
    return k


def to_bins(values: Iterable[object]) -> tuple[int, ...]:
    """``to_bin`` over a list; mixed tokens and ints are fine."""
    return tuple(to_bin(v) for v in values)


def pixel_to_bin(v: float, dim: int) -> int:
    """Pixel coordinate -> bin with the spec's rounding rule ``round(999 * v / max(1, dim - 1))``.

    A result above 999 is an error (there is no bin 1000), not a clamp: it means the pixel lies
    outside the image.
    """
    k = round(MAX_BIN * v / max(1, dim - 1))
    if not 0 <= k <= MAX_BIN:
        raise ValueError(f"pixel {v} on an axis of {dim} px maps to bin {k}, outside 0..{MAX_BIN}")
    return k


def bin_to_pixel(k: int, dim: int) -> int:
    """Bin -> pixel on an axis of ``dim`` pixels: ``k/999 * (dim-1)``, clamped and rounded."""
    return int(min(dim - 1, max(0, round(k / MAX_BIN * (dim - 1)))))


def pixels_to_bins(points: Sequence[float], *, width: int, height: int) -> tuple[int, ...]:
    """Flat pixel points ``x1, y1, x2, y2, ...`` -> bins with ``pixel_to_bin`` (x on width, y on height).

    This is the offline converter's general rule (polygons, plain lists); an odd-length list has no
    pairing and is an error.
    """
    if len(points) % 2:
        raise ValueError(f"pixel points must come in x, y pairs, got {len(points)} values")
    return tuple(pixel_to_bin(v, width if i % 2 == 0 else height) for i, v in enumerate(points))


def bins_to_pixels(bins: Sequence[int], *, width: int, height: int) -> tuple[int, ...]:
    """Flat bins ``x1, y1, ...`` -> pixels (the evaluator's denormalisation)."""
    if len(bins) % 2:
        raise ValueError(f"coordinates must come in x, y pairs, got {len(bins)} values")
    return tuple(bin_to_pixel(k, width if i % 2 == 0 else height) for i, k in enumerate(bins))


def coord_vocab_mask(coord_ids: Sequence[int], vocab_size: int) -> tuple[bool, ...]:
    """Boolean mask over ``vocab_size`` ids, True at the coord ids (ids >= vocab_size are ignored).

    The coord loss restricts logits to these ids; ignoring out-of-range ids lets a mask be built for
    a logits width smaller than the tokenizer (legacy helper semantics).
    """
    if vocab_size < 0:
        raise ValueError(f"vocab_size must be >= 0, got {vocab_size}")
    mask = [False] * vocab_size
    for i in coord_ids:
        if 0 <= i < vocab_size:
            mask[i] = True
    return tuple(mask)


def validate_coord_ids(ids: Sequence[int | None]) -> tuple[int, ...]:
    """Check a tokenizer's ids for the 1000 coord tokens, in bin order.

    A tokenizer without the coord vocabulary typically maps all 1000 strings to ``unk``; that is
    caught here as "not distinct" instead of training silently on a single token.
    """
    if len(ids) != NUM_BINS:
        raise ValueError(f"expected {NUM_BINS} coord token ids, got {len(ids)}")
    bad = [k for k, i in enumerate(ids) if i is None or i < 0]
    if bad:
        raise ValueError(f"coord tokens missing from the tokenizer (first bins: {bad[:5]})")
    if len(set(ids)) != NUM_BINS:
        raise ValueError(
            "coord token ids are not distinct (the tokenizer probably maps them to unk); "
            "add the coord vocabulary with coordexp.learn.model.add_coord_vocab or use a coord checkpoint"
        )
    return tuple(int(i) for i in ids)  # type: ignore[arg-type]
