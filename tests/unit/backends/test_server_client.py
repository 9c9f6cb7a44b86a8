"""The pure parts of the vllm_server client: the bound server record, request building, reply parsing,
retries against a local socket, and the debug-dump cadence (the real server is tests/vllm/test_server.py)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from coordexp.backends.http_json import (
    RetryPolicy,
    ServerGone,
    ServerMalformed,
    ServerRefused,
    ServerStalled,
    call_json,
)
from coordexp.backends.protocol import DecodingConfig
from coordexp.backends.server_api import collapse_image_pads, parse_generate_reply
from coordexp.backends.server_dump import DebugDumper
from coordexp.backends.vllm_server import sampling_params
from coordexp.bind.presets import minimal_config
from coordexp.bind.server import DebugDumpPlan, bind_server

RM = "custom.extra.rollout_matching"
SERVER = (f"{RM}.rollout_backend=vllm", f"{RM}.vllm.mode=server",
          f'{RM}.vllm.server.servers=[{{base_url: "http://127.0.0.1:8000", group_port: 51216}}]')


def _plan(*overrides: str):
    return bind_server(minimal_config("rollout_matching_sft", (*SERVER, *overrides)))


def test_the_server_record_exists_only_in_server_mode():
    assert bind_server(minimal_config("rollout_matching_sft")) is None  # hf
    assert bind_server(minimal_config("rollout_matching_sft", (f"{RM}.rollout_backend=vllm",))) is None  # colocate


@pytest.mark.parametrize(("value", "bound"), [("null", None), ("0", None), ("-1", None), ("30", 30.0)])
def test_infer_timeout_null_or_non_positive_means_no_read_timeout(value, bound):
    assert _plan(f"{RM}.vllm.server.infer_timeout_s={value}").infer_timeout_s == bound


def test_auto_sync_follows_enable_lora_and_lengths_fall_back_to_global_max_length():
    assert _plan(f"{RM}.vllm.sync.mode=auto").sync_mode == "full"
    assert _plan(f"{RM}.vllm.sync.mode=auto", f"{RM}.vllm.enable_lora=true").sync_mode == "adapter"
    assert _plan("global_max_length=3000").max_model_len == 3000
    assert _plan("global_max_length=3000", f"{RM}.vllm.max_model_len=4000").max_model_len == 4000


def test_debug_dump_cadence_defaults_to_the_logging_steps():
    assert _plan().debug_dump is None
    d = _plan(f"{RM}.vllm.server.debug_dump.enabled=true", "training.logging_steps=5",
              "training.logging_first_step=true").debug_dump
    assert (d.every_steps, d.dump_first_step, d.max_events) == (5, True, 3)


def test_dumps_follow_cadence_once_per_step_and_stop_at_max_events(tmp_path):
    plan = DebugDumpPlan(every_steps=2, dump_first_step=False, only_main=True, max_events=2, max_samples=1,
                         max_chars=5, out_dir=None)
    dumper = DebugDumper(plan, tmp_path)
    assert [s for s in range(8) if dumper.due(s) and dumper.write(s, [("a", {"content_parts": [{"url": "x" * 9}]},
                                                                        {"ok": 1}, "abcdefgh")])] == [2, 4]
    first = json.loads((tmp_path / "vllm_server_debug" / "step_000002_event_001.json").read_text())
    assert first["samples"] == [{"sample_id": "a", "rollout_text": "abcde...<truncated>",
                                 "request": {"content_parts": [{"url": "<9 chars of data URL>"}]}, "response": {"ok": 1}}]
    assert not DebugDumper(plan, tmp_path, rank=1).due(2)  # only the main process dumps


def test_greedy_neutralises_sampling_knobs_and_sampling_passes_them_with_the_seed():
    dec = DecodingConfig("greedy", 1, 1, 0.0, 0.9, 50, 1.05, 123, 2)
    greedy = sampling_params(dec, eos_ids=[7, 3], seed=11, stop_args=None)
    assert greedy == {"n": 1, "max_tokens": 123, "temperature": 0.0, "top_p": 1.0, "top_k": 0,
                      "repetition_penalty": 1.05, "stop_token_ids": [3, 7], "skip_special_tokens": False}
    dec = DecodingConfig("sampling", 1, 1, 0.01, 0.9, -1, 1.0, 8, 2)
    sampled = sampling_params(dec, eos_ids=[3], seed=11, stop_args={"coordexp_stop_rules": {}})
    assert (sampled["temperature"], sampled["top_p"], sampled["top_k"], sampled["seed"]) == (0.01, 0.9, 0, 11)
    assert sampled["extra_args"] == {"coordexp_stop_rules": {}}


def test_each_image_placeholder_run_goes_out_as_one_token():
    assert collapse_image_pads([1, 9, 9, 9, 2, 9, 9, 3], 9) == (1, 9, 2, 9, 3)


@pytest.mark.parametrize(("reply", "what"), [
    ([], "not a JSON object"),
    ({"choices": []}, "list of one choice"),
    ({"choices": [{"token_ids": [1, "2"]}], "prompt_token_ids": [1]}, "choices[0].token_ids"),
    ({"choices": [{"token_ids": [1]}]}, "prompt_token_ids"),
])
def test_a_reply_without_the_token_ids_is_malformed(reply, what):
    with pytest.raises(ServerMalformed, match=what.replace("[", r"\[").replace("]", r"\]")):
        parse_generate_reply(reply, "http://x/inference/v1/generate")


class _Flaky(BaseHTTPRequestHandler):
    calls: list[str] = []

    def do_GET(self) -> None:
        _Flaky.calls.append(self.path)
        code, body = {"/500": (500, b"{}"), "/400": (400, b"bad"), "/text": (200, b"not json"),
                      "/ok": (200, b'{"a": 1}')}.get(self.path, (404, b""))
        if self.path == "/slow":
            time.sleep(1.5)
            code, body = 200, b"{}"
        try:
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except BrokenPipeError:  # the client timed out first (the stall case)
            pass

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def flaky():
    _Flaky.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


FAST = RetryPolicy(attempts=3, backoff_s=0.01)


def test_retries_are_bounded_and_only_for_what_a_retry_can_cure(flaky):
    assert call_json("GET", f"{flaky}/ok", timeout=5, retry=FAST) == {"a": 1}
    with pytest.raises(ServerRefused, match=r"HTTP 500.*after 3 attempt") as err:
        call_json("GET", f"{flaky}/500", timeout=5, retry=FAST)
    assert err.value.status == 500 and _Flaky.calls.count("/500") == 3
    with pytest.raises(ServerRefused, match="HTTP 400"):
        call_json("GET", f"{flaky}/400", timeout=5, retry=FAST)
    assert _Flaky.calls.count("/400") == 1  # the request's fault: never retried
    with pytest.raises(ServerMalformed, match="not JSON"):
        call_json("GET", f"{flaky}/text", timeout=5, retry=FAST)
    with pytest.raises(ServerStalled, match=r"no reply within 0.5 s \(after 2 attempt"):
        call_json("GET", f"{flaky}/slow", timeout=0.5, retry=RetryPolicy(attempts=2, backoff_s=0.01))


def test_nothing_listening_is_server_gone():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ServerGone, match=r"nothing answers .*after 2 attempt"):
        call_json("GET", f"http://127.0.0.1:{port}/health", timeout=1, retry=RetryPolicy(attempts=2, backoff_s=0.01))
