"""Data sources named in ``custom.train_jsonl`` / ``custom.val_jsonl``: a JSONL path or a synthetic scheme.

``synthetic://demo?n=16&seed=0`` asks for N generated demo records (random boxes on blank images) instead of a
file, so the demo config and the tests run with no data on disk. Only the address is checked here; the
generator lives with the data code.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import attrs

SYNTHETIC_SCHEME = "synthetic"
SYNTHETIC_KINDS = ("demo",)


@attrs.frozen
class SyntheticSource:
    kind: str
    n: int  # number of records
    seed: int


def parse_synthetic(address: str) -> SyntheticSource | None:
    """The parsed synthetic address, None for a plain path; ValueError says what is wrong with it."""
    parts = urlsplit(address)
    if parts.scheme != SYNTHETIC_SCHEME:
        return None
    kind = parts.netloc
    if kind not in SYNTHETIC_KINDS:
        raise ValueError(f"unknown synthetic data kind {kind!r} (known: {', '.join(SYNTHETIC_KINDS)})")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - {"n", "seed"})
    if unknown:
        raise ValueError(f"unknown synthetic parameter(s) {unknown} (known: n, seed)")
    values = {}
    for name, default in (("n", 16), ("seed", 0)):
        text = query.get(name, [str(default)])[-1]
        if not text.isdigit():
            raise ValueError(f"{name}={text!r} must be a non-negative integer")
        values[name] = int(text)
    if values["n"] < 1:
        raise ValueError("n must be >= 1")
    return SyntheticSource(kind, values["n"], values["seed"])
