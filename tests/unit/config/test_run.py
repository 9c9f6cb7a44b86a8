"""The command line: every shipped config passes --dry-run; exit codes; --help; the step plan."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from coordexp import run
from coordexp.config import config_to_yaml, load_config, load_config_data
from coordexp.config.plan import channel_at
from coordexp.config.schema_ab import ScheduleConfig
from coordexp.spec.paths import REPO_ROOT
from tests.unit.config.conftest import ab, write_yaml

CONFIGS = sorted((REPO_ROOT / "configs").rglob("*.yaml"))


def test_configs_exist():
    names = {p.relative_to(REPO_ROOT / "configs").as_posix() for p in CONFIGS}
    assert {"base.yaml", "demo.yaml", "rollout_matching_sft/template.yaml", "stage2_ab/base.yaml",
            "stage2_ab/prod/ab_mixed.yaml", "stage2_ab/prod/ab_mixed_continue.yaml", "stage2_ab/smoke/a_only.yaml",
            "stage2_ab/smoke/ab_mixed.yaml", "stage2_ab/smoke/b_only.yaml"} <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.relative_to(REPO_ROOT).as_posix())
def test_every_shipped_config_passes_dry_run(path, capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert run.main(["--config", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# trainer variant :" in out
    rel = path.relative_to(REPO_ROOT).as_posix()
    assert f"python -m coordexp.run --config {rel}" in path.read_text(encoding="utf-8").splitlines()[1]


def test_dry_run_yaml_round_trips(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    path = REPO_ROOT / "configs" / "stage2_ab" / "prod" / "ab_mixed.yaml"
    run.main(["--config", str(path), "--dry-run"])
    printed = capsys.readouterr().out.split("---\n# step plan")[0]
    assert load_config_data(yaml.safe_load(printed)).config == load_config(path)


def test_prod_plan_shows_the_seed_schedule(capsys, monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    run.main(["--config", str(REPO_ROOT / "configs/stage2_ab/prod/ab_mixed.yaml"), "--dry-run"])
    out = capsys.readouterr().out
    assert "b_ratio 0.85; first 20 steps ABBBBBABBBBBBABBBBBB" in out
    # The prod leaf reproduces the run as it was (no object cap); the seed's fix is a comment there.
    assert "max_new_tokens 2048" in out and "object cap none" in out


def test_invalid_config_exits_2_with_all_messages(tmp_path, capsys):
    path = write_yaml(tmp_path, "bad.yaml", ab())
    code = run.main(["--config", str(path), "--dry-run", "--set", "training.pakcing=true", "--set", "tuner.lora_rank=x"])
    err = capsys.readouterr().err
    assert code == 2
    assert "training.pakcing: unknown key" in err and "tuner.lora_rank: wrong type" in err


def test_cross_field_error_exits_2(tmp_path, capsys):
    path = write_yaml(tmp_path, "bad.yaml", ab())
    assert run.main(["--config", str(path), "--set", "custom.extra.rollout_matching.decoding.top_k=0"]) == 2
    assert "decoding.top_k: must be -1" in capsys.readouterr().err


def test_print_machine_prints_the_step_machine(tmp_path, capsys):
    path = write_yaml(tmp_path, "ok.yaml", ab())
    assert run.main(["--config", str(path), "--print-machine"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("---") and "stateDiagram-v2" in out
    assert "Schedule --> BuildTarget: advance [is_channel_a]" in out and "Pack --> Log: advance [!has_segments]" in out


def test_missing_data_exits_2_naming_the_key(tmp_path, capsys):
    data = ab()
    data["custom"]["train_jsonl"] = str(tmp_path / "nowhere.jsonl")
    path = write_yaml(tmp_path, "bad.yaml", data)
    assert run.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "custom.train_jsonl" in err and "nowhere.jsonl" in err and "Traceback" not in err


def test_resume_of_a_folder_without_checkpoints_exits_2(tmp_path, capsys):
    path = write_yaml(tmp_path, "ok.yaml", ab())
    assert run.main(["--config", str(path), "--resume", str(tmp_path)]) == 2
    assert "no checkpoint to resume from" in capsys.readouterr().err


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as info:
        run.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--config", "--base_config", "--set", "--dry-run", "--print-machine", "--resume", "Exit codes"):
        assert flag in out


def test_base_config_flag(tmp_path, capsys):
    base = write_yaml(tmp_path, "base.yaml", ab())
    main = write_yaml(tmp_path, "main.yaml", {"global_max_length": 3000})
    assert run.main(["--config", str(main), "--base_config", str(base), "--dry-run"]) == 0
    assert "global_max_length: 3000" in capsys.readouterr().out


def test_schedule_preview_matches_reference_s4():
    schedule = ScheduleConfig(b_ratio=0.85)
    assert "".join(channel_at(schedule, s) for s in range(14)) == "ABBBBBABBBBBBA"
    assert [s for s in range(40) if channel_at(ScheduleConfig(b_ratio=0.05), s) == "B"] == [19, 39]


def test_config_to_yaml_round_trips_every_default():
    config = load_config_data(ab()).config
    assert load_config_data(yaml.safe_load(config_to_yaml(config))).config == config


def test_main_is_short():
    source = Path(run.__file__).read_text(encoding="utf-8")
    body = source.split("def main(")[1].split("\nif __name__")[0]
    assert len(body.strip().splitlines()) < 40
