"""Adapter weight sync against a real vLLM server started with runtime LoRA (the launcher's adapter-mode flags).

Its own module because the server differs from test_server.py's (``--enable-lora``, runtime LoRA updates).
"""

from __future__ import annotations

import pytest
import torch

from coordexp.bind import bind
from coordexp.config import load
from coordexp.data.tiny import build_servable_tiny_qwen3vl
from coordexp.launch import ServerProcess
from coordexp.launch_plan import LaunchArgs, server_commands
from tests.vllm.test_server import Served, _backend, _config, _free_port, _hf, _ids, _parts, _write

pytestmark = pytest.mark.vllm


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("vllm_server_adapter")
    model_dir = build_servable_tiny_qwen3vl(seed=0, out_dir=tmp / "model").path
    port = _free_port()
    cfg = _config(tmp, model_dir, port)
    vllm = cfg["custom"]["extra"]["rollout_matching"]["vllm"]
    vllm.update(enable_lora=True, sync={"mode": "adapter", "fallback_to_full": False})
    config_path = _write(tmp, cfg)
    plan = bind(load(str(config_path)).config).server
    args = LaunchArgs(config=str(config_path), server_gpus="cpu", train_gpus="cpu", cpu_kv_cache_mib=128)
    (command,) = server_commands(args, plan, lora_rank=4)
    server = ServerProcess(command, tmp / "server.log")
    try:
        server.wait_healthy(600)
        yield Served(tmp, model_dir, port, config_path, server)
    finally:
        server.stop()


def test_adapter_sync_loads_the_adapter_and_rollouts_follow_it(served):
    parts = _parts(served)
    backend = _backend(served, parts)
    assert backend.sync_mode == "adapter"
    base = _ids(backend.generate(parts.requests))
    lora_b = [p for n, p in parts.model.named_parameters() if "lora_B" in n]
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in lora_b:
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    backend.sync_weights(parts.model)
    assert backend.stats["syncs_adapter"] == 1 and backend.stats["syncs_full"] == 0
    moved = _ids(backend.generate(parts.requests))
    assert moved != base
    assert moved == _ids(_hf(parts, served.loaded_config()).generate(parts.requests))
