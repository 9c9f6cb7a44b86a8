"""Raw request / response dumps of server-mode rollouts: ``<run>/vllm_server_debug/step_NNNNNN_event_NNN.json``.

The legacy's file name and top-level shape (``global_step``, ``samples``), written ASCII-safe with indent 2,
at most ``max_events`` files, one per optimizer step at the ``every_steps`` cadence. Each sample holds what
the backend saw: the rollout text, the request as sent (images shortened to their size, so a dump stays
small) and the reply as received. The GT text of the legacy dump is not here: the backend never sees GT;
the monitor dump (``monitor_dump.*``) has it next to the same rollouts.

A dump that cannot be written is a warning and a count (``failures``), never a failed step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from coordexp.bind.server import DebugDumpPlan

log = logging.getLogger("coordexp")
DEBUG_DIR = "vllm_server_debug"


def _clip(text: str, max_chars: int) -> str:
    return text if max_chars <= 0 or len(text) <= max_chars else text[:max_chars] + "...<truncated>"


def _short_request(body: dict[str, Any]) -> dict[str, Any]:
    out = dict(body)
    if "content_parts" in out:
        out["content_parts"] = [{**p, "url": f"<{len(p.get('url', ''))} chars of data URL>"} for p in out["content_parts"]]
    return out


class DebugDumper:
    """Decides whether a step is dumped and writes it (see the module docstring)."""

    def __init__(self, plan: DebugDumpPlan | None, run_dir: Path | None, *, rank: int = 0, world: int = 1) -> None:
        self.plan = plan
        self.events = 0
        self.failures = 0
        self._last_step: int | None = None
        self.active = plan is not None and (rank == 0 or not plan.only_main)
        base = Path(plan.out_dir) if plan is not None and plan.out_dir else (run_dir or Path(".")) / DEBUG_DIR
        self.folder = base / f"rank_{rank}" if plan is not None and not plan.only_main and world > 1 else base

    def due(self, step: int) -> bool:
        p = self.plan
        if not self.active or p is None or self._last_step == step:
            return False
        if p.max_events > 0 and self.events >= p.max_events:
            return False
        if step == 0 and not p.dump_first_step:
            return False
        return step % p.every_steps == 0

    def write(self, step: int, samples: Sequence[tuple[str, dict[str, Any], dict[str, Any], str]]) -> Path | None:
        """``samples``: (sample id, request body as sent, reply as received, rollout text)."""
        assert self.plan is not None
        self._last_step = step
        self.events += 1
        rows = []
        for sample_id, body, reply, text in samples[: self.plan.max_samples]:
            rows.append({"sample_id": sample_id, "rollout_text": _clip(text, self.plan.max_chars),
                         "request": _short_request(body), "response": reply})
        path = self.folder / f"step_{step:06d}_event_{self.events:03d}.json"
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"global_step": step, "samples": rows}, ensure_ascii=True, indent=2),
                           encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("vLLM server debug dump %s could not be written (%s); training goes on, further "
                            "failures are only counted", path, exc)
            return None
        return path
