"""Scenarios of spec change 2026-01-15-add-rollout-matching-trainer: each fixture through its runner, compared with its snapshot."""

import pytest

from tests.spec._harness import check_scenario, scenario_params

CHANGE = "2026-01-15-add-rollout-matching-trainer"


@pytest.mark.parametrize("fixture", scenario_params(CHANGE))
def test_scenario(fixture, snapshot_json):
    check_scenario(fixture, snapshot_json)
