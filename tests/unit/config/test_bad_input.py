"""Bad config input never gets through and never shows a traceback: each case exits 2 naming the key.

Every case runs the real entry point (``coordexp.run.main`` in process; a traceback would fail the test as an
uncaught exception), and the undecodable command line also as a subprocess.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from coordexp import run
from coordexp.spec.paths import REPO_ROOT
from tests.unit.config.conftest import ab, write_yaml

RM = "custom.extra.rollout_matching"


def exits_2(capsys, argv: list[str]) -> str:
    assert run.main([*argv, "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err


@pytest.fixture
def config(tmp_path):
    return str(write_yaml(tmp_path, "c.yaml", ab()))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("training.learning_rate=.inf", "training.learning_rate: invalid value, expected a finite number, got inf"),
        ("custom.extra.stage2_ab.coord_entropy_weight=.nan", "coord_entropy_weight: invalid value, expected a finite number"),
        ("global_max_length=.inf", "global_max_length: wrong type, expected int"),
        ("training.effective_batch_size=1234567890123456789012345678901234567890",
         "training.effective_batch_size: invalid value, expected an int with |value| <= 2**63 - 1"),
        ("training.learning_rate=" + "9" * 400, "training.learning_rate: invalid value"),
        (f"{RM}.vllm.server.servers=[{{base_url: 'http://h:8000', group_port: 70000}}]",
         "servers[0].group_port: must be a TCP port in 1..65535, got 70000"),
        (f"{RM}.vllm.server.servers=[{{base_url: 'http://h:8000', group_port: 0}}]", "group_port: must be a TCP port"),
        (f"{RM}.vllm.server.servers=[{{base_url: 'http://h:99999', group_port: 5000}}]", "outside 1..65535"),
        (f"{RM}.monitor_dump.max_text_chars=-1", f"{RM}.monitor_dump.max_text_chars: must be > 0, got -1"),
        (f"{RM}.vllm.limit_mm_per_prompt={{image: -1}}", f"{RM}.vllm.limit_mm_per_prompt.image: must be >= 0"),
        ("training.seed=-1", "training.seed: must be in [0, 4294967295], got -1"),
        ("training.seed=4294967296", "training.seed: must be in [0, 4294967295]"),
        ("tuner.target_modules=[]", "tuner.target_modules: is empty, so LoRA would train nothing"),
        ("tuner.target_modules=['q_proj', '']", "tuner.target_modules[1]: is an empty module name"),
        ("model.model=''", "model.model: is empty"),
        ("model.model='  '", "model.model: is empty"),
        ("training={seed: 1, seed: 2}", "--set training: not valid YAML (duplicate key 'seed'"),
        (f"{RM}.rollout_buffer.m_steps=0", f"{RM}.rollout_buffer.m_steps: must be >= 1, got 0"),
    ],
)
def test_bad_values_exit_2_naming_the_key(capsys, config, override, expected):
    assert expected in exits_2(capsys, ["--config", config, "--set", override])


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("synthetic://shapes?n=abc&seed=0", "n must be a non-negative integer, got 'abc'"),
        ("synthetic://shapes?n=4", "seed must be a non-negative integer, got nothing"),
        ("synthetic://circles?n=4&seed=0", "unknown generator 'circles'"),
        ("synthetic://shapes?n=4&seed=0&n=5", "a parameter is given twice"),
        ("synthetic://shapes?n=4&seed=0&size=3", "parameter size='3' must be an int in 16..1024"),
        ("synthetic://shapes?n=4&seed=0&colour=red", "unknown parameter(s) ['colour']"),
        ("s3://bucket/train.jsonl", "unsupported address scheme 's3'"),
        ("''", "custom.train_jsonl: is an empty string"),
    ],
)
def test_malformed_data_addresses_are_refused_with_the_key(capsys, config, address, expected):
    err = exits_2(capsys, ["--config", config, "--set", f"custom.train_jsonl={address}"])
    assert "  - custom.train_jsonl" in err and expected in err


@pytest.mark.parametrize("address", ["synthetic://shapes?n=8&seed=0", "synthetic://shapes?n=8&seed=3&size=32&max_objects=2"])
def test_synthetic_shapes_addresses_are_accepted(capsys, config, address):
    assert run.main(["--config", config, "--dry-run", "--set", f"custom.train_jsonl={address}"]) == 0
    assert address in capsys.readouterr().out


def test_duplicate_key_in_a_file_names_file_and_both_lines(capsys, tmp_path):
    text = yaml.safe_dump(ab(), sort_keys=False) + "tuner:\n  lora_rank: 8\n  lora_rank: 64\n"
    path = tmp_path / "dup.yaml"
    path.write_text(text, encoding="utf-8")
    line = text.splitlines().index("  lora_rank: 64") + 1
    err = exits_2(capsys, ["--config", str(path)])
    assert f"{path}:{line}: not valid YAML (duplicate key 'lora_rank' (first set on line {line - 1})" in err


def test_non_mapping_custom_beside_top_level_section_is_an_error(capsys, tmp_path):
    data = ab()
    data["rollout_matching"] = data["custom"]["extra"].pop("rollout_matching")
    data["custom"] = 5
    err = exits_2(capsys, ["--config", str(write_yaml(tmp_path, "c.yaml", data))])
    assert "`custom` must be a mapping of settings, got 5 (int), while top-level `rollout_matching` is given" in err
    data["custom"] = {"trainer_variant": "stage2_ab_training", "extra": ["x"]}
    err = exits_2(capsys, ["--config", str(write_yaml(tmp_path, "d.yaml", data))])
    assert "`custom.extra` must be a mapping" in err


def test_one_key_set_in_both_layouts_through_set_is_refused(capsys, config):
    err = exits_2(capsys, ["--config", config, "--set", "rollout_matching.candidate_top_k=3",
                           "--set", f"{RM}.candidate_top_k=4"])
    assert f"--set rollout_matching.candidate_top_k and --set {RM}.candidate_top_k set one key in both layouts" in err
    err = exits_2(capsys, ["--config", config, "--set", "rollout_matching={candidate_top_k: 3}",
                           "--set", f"{RM}.candidate_top_k=4"])
    assert "in both layouts" in err


def test_different_keys_in_the_two_layouts_through_set_merge(capsys, config):
    argv = ["--config", config, "--dry-run", "--set", "rollout_matching.candidate_top_k=3", "--set", f"{RM}.fp_cost=2.0"]
    assert run.main(argv) == 0
    out = capsys.readouterr().out
    assert "candidate_top_k: 3" in out and "fp_cost: 2.0" in out


def test_schema_errors_name_the_file_of_the_extends_chain_and_its_line(capsys, tmp_path):
    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump(ab(), sort_keys=False) + "tuner:\n  lora_rnak: 8\n  lora_alpha: -2\n",
                    encoding="utf-8")
    lines = base.read_text(encoding="utf-8").splitlines()
    typo, alpha = lines.index("  lora_rnak: 8") + 1, lines.index("  lora_alpha: -2") + 1
    leaf = write_yaml(tmp_path / "runs", "leaf.yaml", {"extends": "../base.yaml", "training": {"lerning_rate": 1.0}})
    err = exits_2(capsys, ["--config", str(leaf)])
    assert f"{base}:{typo}: tuner.lora_rnak: unknown key" in err
    assert f"{leaf}:3: training.lerning_rate: unknown key" in err
    # a cross-field/range problem is located too: fix the typos, the bad alpha remains, found in base.yaml
    base.write_text(base.read_text(encoding="utf-8").replace("lora_rnak", "lora_rank"), encoding="utf-8")
    leaf.write_text("extends: ../base.yaml\n", encoding="utf-8")
    assert f"{base}:{alpha}: tuner.lora_alpha: must be > 0, got -2" in exits_2(capsys, ["--config", str(leaf)])
    # once --set replaces the value, the file is no longer named for it
    err = exits_2(capsys, ["--config", str(leaf), "--set", "tuner.lora_alpha=-3"])
    assert "  - tuner.lora_alpha: must be > 0, got -3" in err


def test_a_missing_key_is_located_at_its_section(capsys, tmp_path):
    data = ab()
    del data["custom"]["trainer_variant"]
    path = write_yaml(tmp_path, "c.yaml", data)
    line = path.read_text(encoding="utf-8").splitlines().index("custom:") + 1
    assert f"{path}:{line}: custom.trainer_variant: required key is missing" in exits_2(capsys, ["--config", str(path)])


def test_undecodable_and_unparseable_files_get_a_clean_message(capsys, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"model:\n  model: caf\xe9\n")
    assert f"{bad}:2: not UTF-8 text (byte 0xe9 at offset 19)" in exits_2(capsys, ["--config", str(bad)])
    deep = tmp_path / "deep.yaml"
    deep.write_text("a: " + "[" * 200_000 + "]" * 200_000 + "\n", encoding="utf-8")
    assert "nested too deeply" in exits_2(capsys, ["--config", str(deep)])
    huge = tmp_path / "huge.yaml"
    huge.write_text("global_max_length: " + "9" * 5000 + "\n", encoding="utf-8")
    assert f"{huge}: not readable as YAML" in exits_2(capsys, ["--config", str(huge)])


def test_undecodable_command_line_bytes_exit_2_without_traceback(tmp_path):
    config = write_yaml(tmp_path, "c.yaml", ab())
    argv = [sys.executable, "-m", "coordexp.run", "--config", str(config), "--dry-run",
            "--set", b"model.model=caf\xe9".decode("utf-8", "surrogateescape")]
    done = subprocess.run(argv, capture_output=True, cwd=REPO_ROOT)
    err = done.stderr.decode("utf-8", "replace")
    assert done.returncode == 2 and "Traceback" not in err
    assert "--set model.model: the text is not valid UTF-8 (byte 0xe9 at character 15)" in err


def test_a_choice_yaml_reads_as_a_boolean_says_to_quote_it(capsys, config):
    err = exits_2(capsys, ["--config", config, "--set", "training.eval_strategy=no"])
    assert "got False (bool)" in err and "quote it" in err and "--set 'key=\"no\"'" in err
    # quoted, the same word is the choice it means
    assert run.main(["--config", config, "--set", 'training.eval_strategy="no"', "--dry-run"]) == 0


def test_a_plain_wrong_choice_gets_no_quoting_hint(capsys, config):
    err = exits_2(capsys, ["--config", config, "--set", "training.eval_strategy=weekly"])
    assert "expected one of 'no', 'steps', 'epoch'" in err and "quote it" not in err
