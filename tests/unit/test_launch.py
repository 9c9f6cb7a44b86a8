"""The launcher's commands (``python -m coordexp.launch ... --dry-run``): the seeds' 3v1 / 7v1 topologies and the CPU form."""

from __future__ import annotations

import re
import shlex

import pytest
import yaml

from coordexp import launch
from coordexp.errors import ConfigError
from coordexp.launch_plan import STOP_RULES_PROCESSOR, launch_env, parse_args
from coordexp.spec.paths import REPO_ROOT

PROD = REPO_ROOT / "configs/stage2_ab/prod/ab_mixed.yaml"  # server mode, one server at 127.0.0.1:8000


def _dry_run(capsys, *argv: str) -> list[tuple[dict[str, str], list[str]]]:
    """(env, argv) of each printed command line."""
    assert launch.main(["--dry-run", *argv]) == 0
    out = []
    for line in capsys.readouterr().out.splitlines():
        if not line or line.startswith("#"):
            continue
        words = shlex.split(line)
        n = next(i for i, w in enumerate(words) if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", w))
        out.append((dict(w.split("=", 1) for w in words[:n]), words[n:]))
    return out


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.mark.parametrize(("server_gpus", "train_gpus", "dp"), [("0,1,2", "3", 3), ("0,1,2,3,4,5,6", "7", 7)])
def test_seed_topologies_put_the_server_and_the_learner_on_their_gpus(capsys, server_gpus, train_gpus, dp):
    (server_env, server), (learner_env, learner) = _dry_run(
        capsys, f"server_gpus={server_gpus}", f"train_gpus={train_gpus}", f"config={PROD}")
    assert server_env["CUDA_VISIBLE_DEVICES"] == server_gpus and learner_env["CUDA_VISIBLE_DEVICES"] == train_gpus
    assert server[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert _flag(server, "--data-parallel-size") == str(dp) and _flag(server, "--tensor-parallel-size") == "1"
    assert (_flag(server, "--host"), _flag(server, "--port")) == ("127.0.0.1", "8000")
    assert _flag(server, "--max-model-len") == "12000"  # vllm.max_model_len of the stage2_ab base
    assert _flag(server, "--gpu-memory-utilization") == "0.85"
    assert _flag(server, "--logits-processors") == STOP_RULES_PROCESSOR and "--enable-scale-out" in server
    assert server_env["VLLM_SERVER_DEV_MODE"] == "1" and "--enable-lora" not in server  # full sync: reload endpoints
    assert "127.0.0.1" in server_env["NO_PROXY"]
    assert learner[1:] == ["-m", "coordexp.run", "--config", str(PROD)]


def test_overrides_reach_the_server_and_run_args_reach_the_learner(capsys):
    (_, server), (_, learner) = _dry_run(
        capsys, "server_gpus=0,1,2,3", "train_gpus=4", f"config={PROD}", "server_tp=2",
        "vllm_gpu_memory_utilization=0.75", "--", "--set", "training.max_steps=3")
    assert (_flag(server, "--tensor-parallel-size"), _flag(server, "--data-parallel-size")) == ("2", "2")
    assert _flag(server, "--gpu-memory-utilization") == "0.75"
    assert learner[-2:] == ["--set", "training.max_steps=3"]


def test_adapter_sync_starts_the_server_with_runtime_lora(capsys, tmp_path):
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(yaml.safe_dump({
        "extends": str(PROD),
        "custom": {"extra": {"rollout_matching": {"vllm": {"enable_lora": True, "sync": {"mode": "auto"}}}}},
    }), encoding="utf-8")
    (env, server), _ = _dry_run(capsys, "server_gpus=0", "train_gpus=1", f"config={cfg}")
    assert "--enable-lora" in server and _flag(server, "--max-lora-rank") == "16"  # tuner.lora_rank 16 (allowed as is)
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"


def test_cpu_form_sizes_the_kv_cache_instead_of_a_share_of_ram(capsys):
    (env, server), (learner_env, _) = _dry_run(capsys, "server_gpus=cpu", "train_gpus=cpu", f"config={PROD}",
                                               "cpu_kv_cache_mib=64")
    assert "CUDA_VISIBLE_DEVICES" not in env and learner_env["CUDA_VISIBLE_DEVICES"] == ""
    assert _flag(server, "--kv-cache-memory-bytes") == str(64 * 2**20) and "--gpu-memory-utilization" not in server


def test_several_train_gpus_are_refused_before_anything_starts():
    with pytest.raises(ConfigError, match="one learner process"):
        launch.plan_commands(parse_args(["server_gpus=0,1", "train_gpus=2,3", f"config={PROD}"])[0])


@pytest.mark.parametrize(("argv", "message"), [
    (["server_gpus=0,1", "train_gpus=1"], "must not share a GPU"),
    (["server_gpus=0,x", "train_gpus=3"], "comma-separated GPU ids"),
    (["server_gpus=0,1,2", "train_gpus=3", "server_tp=2"], "does not divide"),
    (["server_gpus=0", "train_gpus=1", "bogus=1"], "unknown"),
])
def test_bad_launcher_arguments_exit_2_with_the_reason(capsys, argv, message):
    assert launch.main(["--dry-run", *argv, f"config={PROD}"]) == 2
    assert message in capsys.readouterr().err


def test_children_lose_the_proxy_variables():
    env = launch_env({"http_proxy": "p", "HTTPS_PROXY": "p", "all_proxy": "p", "PATH": "/bin"}, {"NO_PROXY": "localhost"})
    assert env == {"PATH": "/bin", "NO_PROXY": "localhost"}


def test_the_adapter_rank_is_rounded_up_to_one_vllm_serves(capsys, tmp_path):
    cfg = tmp_path / "adapter.yaml"
    cfg.write_text(yaml.safe_dump({
        "extends": str(PROD),
        "custom": {"extra": {"rollout_matching": {"vllm": {"enable_lora": True, "sync": {"mode": "adapter"}}}}},
    }), encoding="utf-8")
    (_, server), (_, learner) = _dry_run(capsys, "server_gpus=0", "train_gpus=1", f"config={cfg}", "--",
                                         "--set", "tuner.lora_rank=4")
    assert _flag(server, "--max-lora-rank") == "8" and learner[-2:] == ["--set", "tuner.lora_rank=4"]
