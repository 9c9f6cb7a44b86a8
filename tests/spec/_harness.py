"""Shared body of the per-change scenario suites."""

from __future__ import annotations

import pytest

from coordexp.spec.fixtures import iter_fixtures
from coordexp.spec.runners import run_scenario


def scenario_params(change: str) -> list:
    return [pytest.param(f, id=f.scenario) for f in iter_fixtures(change)]


def check_scenario(fixture, snapshot_json) -> None:
    result = run_scenario(fixture.transition, fixture.input)
    assert result == snapshot_json
