"""Scenarios of spec change stage2-ab-training: each fixture through its runner, compared with its snapshot."""

import pytest

from tests.spec._harness import check_scenario, scenario_params

CHANGE = "stage2-ab-training"


@pytest.mark.parametrize("fixture", scenario_params(CHANGE))
def test_scenario(fixture, snapshot_json):
    check_scenario(fixture, snapshot_json)
