"""The two-stage demo (demo/): both stages train on the demo's own task, and Stage-2 starts where Stage-1 ends.

A checkpoint only makes sense with the prompt, data and image processing it was trained on, so the Stage-1
and Stage-2 configs must not drift from ``configs/demo.yaml`` on any of them.
"""

from __future__ import annotations

import attrs

from coordexp.config import load_config
from coordexp.config.schema_model import DEMO_MODEL
from coordexp.spec.paths import REPO_ROOT

DEMO = REPO_ROOT / "demo"


def _task(path):
    cfg = load_config(str(path))
    c = cfg.custom
    return cfg, (c.train_jsonl, c.val_jsonl, c.user_prompt, c.system_prompt, c.object_ordering,
                 attrs.astuple(c.coord_soft_ce_w1), cfg.model.torch_dtype, cfg.global_max_length)


def test_stage1_is_channel_a_only_on_the_demo_task():
    stage1, task1 = _task(DEMO / "stage1.yaml")
    _, demo_task = _task(REPO_ROOT / "configs" / "demo.yaml")
    assert task1 == demo_task
    assert stage1.model.model == DEMO_MODEL  # trained from the untrained demo model
    assert stage1.stage2_ab.schedule.b_ratio == 0.0  # GT teacher forcing only
    assert stage1.training.save_last_epoch  # the run leaves the checkpoint Stage-2 reads


def test_stage2_starts_from_the_stage1_checkpoint_on_the_same_task():
    stage1, _ = _task(DEMO / "stage1.yaml")
    stage2, task2 = _task(DEMO / "stage2.yaml")
    _, demo_task = _task(REPO_ROOT / "configs" / "demo.yaml")
    assert task2 == demo_task
    run_dir = f"{stage1.training.output_dir}/{stage1.training.run_name}"
    assert stage2.model.model == f"{run_dir}/checkpoint-{stage1.training.max_steps}"
    assert stage2.stage2_ab.schedule.b_ratio > 0  # real Stage-2: Channel-B rollout steps take part
