"""Runner for ``pack_buffer``: a sequence of insert / pop / drain operations on one carry buffer.

Input: one run ``{"capacity": C, "cap": N, "min_fill_ratio": r, "ops": [op, ...]}`` or
``{"runs": [run, ...]}``. An op is ``{"op": "insert", "segments": [{"key", "length"}, ...]}``,
``{"op": "pop"}`` or ``{"op": "drain"}``; ``"binpacking_missing": true`` on pop/drain simulates the
package being absent. Each op reports its result (or its expected error) and the buffer afterwards, so
a scenario can show that a refused insert left the buffer as it was.
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from coordexp.core.pack import PackBuffer, SegmentRef, drain, insert, pop_pack
from coordexp.errors import PackingError
from coordexp.serde import structure, unstructure
from coordexp.spec.runners import each_case, expected_error
from coordexp.spec.runners.pack_select import missing_importer

TRANSITION = "pack_buffer"


@attrs.frozen
class BufferOp:
    op: Literal["insert", "pop", "drain"]
    segments: tuple[SegmentRef, ...] = ()
    binpacking_missing: bool = False


@attrs.frozen
class BufferRun:
    capacity: int  # segments
    cap: int  # tokens
    min_fill_ratio: float
    ops: tuple[BufferOp, ...]


def _pack_data(pack: Any) -> dict[str, Any]:
    out = unstructure(pack)
    out["segments"] = [s.key for s in pack.segments]
    out["fill"] = round(pack.fill, 6)
    out["gain_vs_fifo"] = round(pack.gain_vs_fifo, 6)
    return out


def _apply(buf: PackBuffer, op: BufferOp) -> tuple[Any, PackBuffer]:
    kwargs = {"importer": missing_importer} if op.binpacking_missing else {}
    if op.op == "insert":
        return {"inserted": [s.key for s in op.segments]}, insert(buf, op.segments)
    if op.op == "pop":
        pack, buf = pop_pack(buf, **kwargs)
        return {"pack": _pack_data(pack)}, buf
    packs = drain(buf, **kwargs)
    return {"packs": [_pack_data(p) for p in packs]}, attrs.evolve(buf, segments=())


def _run_one(run: BufferRun) -> list[dict[str, Any]]:
    buf = PackBuffer(capacity=run.capacity, cap=run.cap, min_fill_ratio=run.min_fill_ratio)
    steps = []
    for op in run.ops:
        try:
            result, buf = _apply(buf, op)
        except (PackingError, ImportError) as exc:
            result = expected_error(exc)
        steps.append({"op": op.op, **result, "buffer": [[s.key, s.length] for s in buf.segments]})
    return steps


def run(data: dict[str, Any]) -> Any:
    return each_case(data, lambda r: _run_one(structure(r, BufferRun)), transition=TRANSITION, key="runs")
