"""Data sources named in ``custom.train_jsonl`` / ``custom.val_jsonl``: a JSONL path or a synthetic address.

``synthetic://shapes?n=64&seed=0`` asks for N generated shapes records (coloured rectangles, ellipses and
triangles, drawn by ``coordexp.data.synthetic``) instead of a file, so the demo config and the tests run with
no data on disk. The address grammar is written once, here: ``parse_synthetic`` is what the config check and
the data loader both call. ``n`` is required (a data set size is never guessed), ``seed`` defaults to 0, and
any further parameter (``size``, ``min_objects``, ...) is passed through to the generator, which owns their
meaning, defaults and limits.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs

SYNTHETIC_SCHEME = "synthetic"
SYNTHETIC_KINDS = ("shapes",)
EXAMPLE = "synthetic://shapes?n=64&seed=0"


@attrs.frozen
class SyntheticSource:
    kind: str
    n: int  # number of records
    seed: int
    params: tuple[tuple[str, str], ...] = ()  # generator parameters as written, in address order


def _count(query: dict[str, list[str]], name: str, default: int | None) -> int:
    if name not in query:
        if default is None:
            raise ValueError(f"`{name}` is required")
        return default
    text = query[name][0]
    if not text.isascii() or not text.isdigit():
        raise ValueError(f"{name}={text!r} must be a non-negative integer")
    if len(text) > 18:
        raise ValueError(f"{name}={text[:12]}... is too large ({len(text)} digits)")
    return int(text)


def parse_synthetic(address: str) -> SyntheticSource | None:
    """The parsed synthetic address, None for a plain path; ValueError says what is wrong with it."""
    parts = urlsplit(address)
    if parts.scheme != SYNTHETIC_SCHEME:
        if "://" in address:
            raise ValueError(f"unsupported address scheme {parts.scheme!r}: give a local JSONL path or {EXAMPLE}")
        return None
    if parts.netloc not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic data kind {parts.netloc!r} (known: {', '.join(SYNTHETIC_KINDS)})")
    if parts.path or parts.fragment:
        raise ValueError(f"a synthetic address has no path or fragment, got {parts.path + parts.fragment!r}")
    try:
        query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=bool(parts.query))
    except ValueError as exc:
        raise ValueError(f"malformed parameters {parts.query!r} ({exc}); write name=value pairs joined by &") from exc
    repeated = sorted(k for k, v in query.items() if len(v) > 1)
    if repeated:
        raise ValueError(f"parameter(s) {repeated} given more than once")
    n = _count(query, "n", None)
    if n < 1:
        raise ValueError("n must be >= 1")
    seed = _count(query, "seed", 0)
    params = tuple((k, v[0]) for k, v in query.items() if k not in ("n", "seed"))
    return SyntheticSource(parts.netloc, n, seed, params)
