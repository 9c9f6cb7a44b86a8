"""DiagnosticGuard: a failing diagnostic warns once, is counted, and never stops training.

Diagnostics (desc monitor, monitor dumps, TensorBoard) describe a run; losing one must not kill a
long job. The legacy swallowed their errors (``except Exception: pass``, rollout §15 R8), so a broken
monitor looked exactly like a quiet one. Here every failure is counted per diagnostic and reaches the
log as ``telemetry/diagnostic_failures/<name>``, the first one of each diagnostic is logged with its
traceback, and only registered diagnostics may be guarded: losses and other parts that decide what
the model learns are never run through this guard, so their failures raise.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

from coordexp.errors import TelemetryError
from coordexp.telemetry.keys_step import DIAGNOSTICS

T = TypeVar("T")
log = logging.getLogger(__name__)


class DiagnosticGuard:
    """Runs diagnostics; ``metrics()`` hands the failure counts since the last call to the step."""

    def __init__(self) -> None:
        self._pending: Counter[str] = Counter()
        self.total: Counter[str] = Counter()  # failures since the run started, per diagnostic

    def run(self, name: str, fn: Callable[..., T], *args: object, **kwargs: object) -> T | None:
        """``fn(*args, **kwargs)``, or None after counting (and, the first time, logging) its failure."""
        if name not in DIAGNOSTICS:
            raise TelemetryError(
                f"{name!r} is not a registered diagnostic ({', '.join(DIAGNOSTICS)}); anything that affects "
                "training must fail loudly instead of being guarded"
            )
        try:
            return fn(*args, **kwargs)
        except Exception:  # noqa: BLE001 - counted and logged below; the point of a diagnostic guard
            self._pending[name] += 1
            self.total[name] += 1
            if self.total[name] == 1:
                log.warning("diagnostic %s failed; training continues, further failures are only counted "
                            "(telemetry/diagnostic_failures/%s)", name, name, exc_info=True)
            return None

    def metrics(self) -> dict[str, float]:
        """Failure counts since the last call, as step metrics (empty when nothing failed)."""
        out = {f"telemetry/diagnostic_failures/{n}": float(c) for n, c in sorted(self._pending.items())}
        self._pending.clear()
        return out
