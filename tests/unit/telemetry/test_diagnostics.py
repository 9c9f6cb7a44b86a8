"""DiagnosticGuard: diagnostics warn once and are counted; anything else is refused, and Ctrl-C is never caught."""

from __future__ import annotations

import logging

import pytest

from coordexp.errors import TelemetryError
from coordexp.telemetry.diagnostics import DiagnosticGuard


def _boom():
    raise ValueError("encoder missing")


def test_failures_are_counted_per_call_window_and_warned_once(caplog):
    guard = DiagnosticGuard()
    with caplog.at_level(logging.WARNING, logger="coordexp.telemetry.diagnostics"):
        assert guard.run("desc_monitor", _boom) is None
        assert guard.run("desc_monitor", _boom) is None
        assert guard.run("monitor_dump", lambda x: x * 2, 21) == 42
    assert len(caplog.records) == 1 and "desc_monitor" in caplog.records[0].getMessage()
    assert guard.metrics() == {"telemetry/diagnostic_failures/desc_monitor": 2.0}
    assert guard.metrics() == {}  # handed to one step only
    guard.run("desc_monitor", _boom)
    assert guard.total["desc_monitor"] == 3 and len(caplog.records) == 1


def test_only_registered_diagnostics_may_be_guarded():
    with pytest.raises(TelemetryError, match="'loss/coord' is not a registered diagnostic"):
        DiagnosticGuard().run("loss/coord", _boom)


def test_keyboard_interrupt_is_not_swallowed():
    def stop():
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        DiagnosticGuard().run("monitor_dump", stop)
