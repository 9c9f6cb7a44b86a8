"""Runner for ``Transition: parse`` scenarios.

Input (one case, or ``{"cases": [case, ...]}`` for scenarios with sub-cases)::

    {"tokenizer": "char" | {"char_fuse": ["}}", ...], "lossy": ["}"]} | "fixture-bpe",   (default "char")
     "text": "..."  (encoded with that tokenizer)  |  "ids": [...],
     "layout": "object_n" | "objects_array",                               (default "object_n")
     "repeat": 2}                                  (optional: parse again and report whether equal)

``lossy`` (optional) makes the tokenizer's *re-encoding* of short fragments replace those strings by
"?", as a normalising tokenizer would; the rollout ids are still encoded exactly. It is how a scenario
reaches the token-internal cut that cannot be re-encoded (reference 15 W11).

Output: ``coordexp.inspect.parse_view`` of the ParseResult (texts, indices, bins, reasons).
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from coordexp.core.coordjson import Layout
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.tokens import TokenContext, char_context
from coordexp.errors import SpecError
from coordexp.inspect import parse_view
from coordexp.spec.runners import each_case

TRANSITION = "parse"

_CASE_KEYS = {"tokenizer", "text", "ids", "layout", "repeat", "label"}


@functools.lru_cache(maxsize=16)
def _context(fuse: tuple[str, ...] | None, bpe: bool) -> TokenContext:
    if bpe:
        from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context

        return load_token_context(fixture_tokenizer_path())
    return char_context(fuse or ())


def context_for(spec: Any) -> TokenContext:
    """The TokenContext a fixture names: "char", {"char_fuse": [...]} or "fixture-bpe"."""
    if spec in (None, "char"):
        return _context(None, False)
    if spec == "fixture-bpe":
        return _context(None, True)
    if isinstance(spec, dict) and set(spec) <= {"char_fuse", "lossy"} and "char_fuse" in spec:
        ctx = _context(tuple(spec["char_fuse"]), False)
        return _lossy(ctx, tuple(spec.get("lossy", ())))
    raise SpecError(
        'parse fixture: tokenizer must be "char", "fixture-bpe" or {"char_fuse": [...], "lossy": [...]}, '
        f"got {spec!r}"
    )


def _lossy(ctx: TokenContext, lost: tuple[str, ...]) -> TokenContext:
    if not lost:
        return ctx
    exact = ctx.encode

    def encode(text: str) -> list[int]:
        for s in lost:
            text = text.replace(s, "?")
        return exact(text)

    return attrs.evolve(ctx, encode=encode, name=ctx.name + "+lossy")


def _is_lossy(case: dict[str, Any]) -> bool:
    spec = case.get("tokenizer")
    return isinstance(spec, dict) and bool(spec.get("lossy"))


def _run_case(case: dict[str, Any]) -> dict[str, Any]:
    unknown = set(case) - _CASE_KEYS
    if unknown or ("text" in case) == ("ids" in case):
        raise SpecError(f"parse fixture case needs exactly one of text/ids and only keys {sorted(_CASE_KEYS)}; got {sorted(case)}")
    ctx = context_for(case.get("tokenizer"))
    layout_name = case.get("layout", "object_n")
    if layout_name not in {lay.value for lay in Layout}:
        raise SpecError(f"parse fixture: unknown layout {layout_name!r}; known {[lay.value for lay in Layout]}")
    layout = Layout(layout_name)
    exact = context_for({"char_fuse": case["tokenizer"]["char_fuse"]}) if _is_lossy(case) else ctx
    ids = exact.encode(case["text"]) if "text" in case else list(case["ids"])
    rollout = Rollout(tuple(ids))
    result = parse(rollout, ctx=ctx, layout=layout)
    out = parse_view(result, ctx)
    if "label" in case:
        out = {"label": case["label"], **out}
    if case.get("repeat", 1) > 1:
        again = [parse(rollout, ctx=ctx, layout=layout) for _ in range(case["repeat"] - 1)]
        out["identical_on_repeat"] = all(r == result for r in again)
    return out


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
