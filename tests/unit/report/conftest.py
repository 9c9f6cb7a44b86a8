"""One short real run folder for the report tests: Stage-2 AB (A, B), evaluations, monitor dumps, desc monitor."""

from __future__ import annotations

import pytest

from tests.integration.conftest import run_config, tiny_config


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("run")
    cfg = tiny_config(tmp, "stage2_ab_training", training__max_steps=2, training__save_strategy="no")
    cfg["custom"]["extra"]["rollout_matching"]["desc_monitor"] = {"enabled": True, "mode": "exact", "every_steps": 1}
    return run_config(tmp, cfg).run_dir
