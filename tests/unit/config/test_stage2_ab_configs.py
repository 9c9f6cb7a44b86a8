"""The shipped Stage-2 AB configs: the base is seed 000's cure with the guard on, prod keeps its recorded
values, the three ablations are seed 000 section 7, and the dry run shows the schedule facts of issue 11."""

from __future__ import annotations

import attrs
import pytest

from coordexp import run
from coordexp.config import load_config
from coordexp.spec.paths import REPO_ROOT
from tests.unit.config.conftest import SFT_MINIMAL, ab, check, one_error

AB_DIR = REPO_ROOT / "configs" / "stage2_ab"
G = "custom.extra.stability_guard"


def cfg(rel: str):
    return load_config(str(AB_DIR / rel))


def knobs(c) -> tuple:
    rm = c.rollout_matching
    return c.stage2_ab.schedule.b_ratio, rm.repeat_terminate.max_object_keys, rm.max_new_tokens


def test_base_configs_are_the_seed_cure_with_the_guard_on():
    base = cfg("base.yaml")
    assert knobs(base) == (0.05, 60, 2048)
    assert base.stability_guard.enabled and base.stability_guard.action == "backoff"
    assert base.stability_guard.max_truncated_rate == 0.05  # the seed's healthy truncation
    root = load_config(str(REPO_ROOT / "configs" / "base.yaml"))
    assert root.rollout_matching.max_new_tokens == 2048 and root.rollout_matching.repeat_terminate.max_object_keys == 60
    assert root.stability_guard.enabled


def test_prod_configs_keep_their_recorded_values():
    assert knobs(cfg("prod/ab_mixed.yaml")) == (0.85, None, 2048)
    assert knobs(cfg("prod/ab_mixed_continue.yaml")) == (0.85, None, 3084)
    for rel in ("prod/ab_mixed.yaml", "prod/ab_mixed_continue.yaml"):
        assert cfg(rel).stability_guard.action == "warn"  # visible, but the recorded schedule is never changed
        assert "recorded" in (AB_DIR / rel).read_text(encoding="utf-8")


@pytest.mark.parametrize("name,expected", [
    ("fix_termination", (0.85, 60, 3084)),
    ("fix_schedule", (0.05, None, 3084)),
    ("fix_both", (0.05, 60, 2048)),
])
def test_ablations_are_prod_with_exactly_the_seed_overrides(name, expected, capsys, monkeypatch):
    path = AB_DIR / "ablations" / f"{name}.yaml"
    assert "extends: ../prod/ab_mixed_continue.yaml" in path.read_text(encoding="utf-8")
    ablation, prod = load_config(str(path)), cfg("prod/ab_mixed_continue.yaml")
    assert knobs(ablation) == expected
    # everything else is prod: only the three knobs, the run's name/folder and its length differ
    t = ablation.training
    assert (t.run_name, t.max_steps) == (f"ablation_{name}", 200)
    same = attrs.evolve(ablation, training=attrs.evolve(t, run_name=prod.training.run_name,
                                                       output_dir=prod.training.output_dir, max_steps=None))
    rm = attrs.evolve(same.rollout_matching, max_new_tokens=prod.rollout_matching.max_new_tokens,
                      repeat_terminate=prod.rollout_matching.repeat_terminate)
    ab_ = attrs.evolve(same.stage2_ab, schedule=prod.stage2_ab.schedule)
    same = attrs.evolve(same, custom=attrs.evolve(same.custom, extra=attrs.evolve(
        same.custom.extra, rollout_matching=rm, stage2_ab=ab_)))
    assert same == prod
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert run.main(["--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"max_new_tokens {expected[2]}" in out


@pytest.mark.parametrize("ratio,shown", [
    ("0.05", "B at steps 19, 39, 59, 79, 99, 119, ..."),
    ("0.85", "A at steps 0, 6, 13, 20, 26, 33, ..."),
    ("0.25", "B at steps 3, 7, 11, 15, 19, 23, ..."),
])
def test_dry_run_lists_the_steps_of_the_rarer_channel(ratio, shown, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    path = AB_DIR / "base.yaml"
    assert run.main(["--config", str(path), "--set", f"custom.extra.stage2_ab.schedule.b_ratio={ratio}",
                     "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("# schedule"))
    assert line.endswith(shown)


def test_dry_run_shows_a_pattern_cycle(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert run.main(["--config", str(AB_DIR / "base.yaml"), "--set", "custom.extra.stage2_ab.schedule.b_ratio=null",
                     "--set", "custom.extra.stage2_ab.schedule.pattern=[A, A, B]",
                     "--set", f"{G}.action=warn", "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("# schedule"))
    assert "pattern AAB; first 20 steps AABAABAABAABAABAABAA; B at steps 2, 5, 8" in line


def test_dry_run_shows_the_guard(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert run.main(["--config", str(AB_DIR / "base.yaml"), "--dry-run"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("# stability guard"))
    assert "backoff to b_ratio 0.02, then stop" in line and "truncation > 0.05" in line


# --- guard rules ---------------------------------------------------------------------------------------


def test_backoff_needs_a_b_ratio_schedule():
    assert "pattern" in one_error(ab(), f"{G}.enabled=true", f"{G}.action=backoff",
                                  "custom.extra.stage2_ab.schedule.b_ratio=null",
                                  "custom.extra.stage2_ab.schedule.pattern=[A, B]")
    assert "rollout_matching_sft has no schedule" in one_error(SFT_MINIMAL, f"{G}.enabled=true", f"{G}.action=backoff")


def test_backoff_that_cannot_lower_the_ratio_warns():
    found = check(ab(), f"{G}.enabled=true", f"{G}.action=backoff", f"{G}.backoff_b_ratio=0.5")
    assert any("first alarm stops the run" in w for w in found)
    assert not check(ab(), f"{G}.enabled=true", f"{G}.action=backoff", f"{G}.backoff_b_ratio=0.1")


@pytest.mark.parametrize("override,needle", [
    (f"{G}.window=0", "window: must be >= 1"),
    (f"{G}.patience=0", "patience: must be >= 1"),
    (f"{G}.backoff_b_ratio=1.0", "backoff_b_ratio: must be in [0, 1)"),
    (f"{G}.max_truncated_rate=-0.1", "max_truncated_rate: must be >= 0"),
    (f"{G}.action=pause", "action"),
])
def test_guard_ranges(override, needle):
    assert needle in one_error(ab(), override)
