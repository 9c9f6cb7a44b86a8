"""A local HTTP peer that answers the vLLM 0.32 server endpoints the ``vllm_server`` client calls, for the
``backend`` runner: the client under test is the real one (``VllmServerBackend`` over ``VllmApi`` and
``http_json``), only the engine behind the URL is replaced by replies the fixture gives.

Each request is recognised by its image's data URL (the runner registers every request's URL, full prompt ids
and completion ids); the peer expands the prompt as vLLM would (it answers the registered full prompt ids) and
records what each POST carried (sample index, whether the ids were the collapsed prompt, the sampling params).
``GET /server_info?config_format=json`` answers vLLM's shape with the peer's data-parallel size (``replicas``;
``None``: a reply without the config, as a server that does not say). Each peer counts the generate requests
in flight at once (``peak``); with ``gather_s`` a reply waits, at most that long, until ``gather[i]`` requests
are in flight at peer ``i``, so the peak shows what the client sends together, not how fast threads start.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import attrs


@attrs.define
class Entry:
    index: int
    collapsed: tuple[int, ...]  # what the client must send
    prompt_ids: tuple[int, ...]  # what vLLM would expand it to
    completion_ids: tuple[int, ...]


@attrs.define
class PeerState:
    model: str
    entries: Mapping[str, Entry]  # image data URL -> entry
    finish_reason: str
    stall_s: float
    posts: list[dict[str, Any]] = attrs.Factory(list)
    replicas: Sequence[int | None] = ()  # per peer: its data-parallel size (missing: 1)
    gather: Sequence[int] = ()  # per peer: requests in flight to wait for before replying (with gather_s)
    gather_s: float = 0.0
    in_flight: dict[int, int] = attrs.Factory(dict)  # peer index -> generate requests being answered
    peak: dict[int, int] = attrs.Factory(dict)  # peer index -> the most in flight at once
    lock: threading.Condition = attrs.Factory(threading.Condition)

    def server_info(self, peer: int) -> dict[str, Any]:
        """vLLM 0.32's ``/server_info?config_format=json`` reply, cut to what the client reads."""
        replicas = self.replicas[peer] if peer < len(self.replicas) else 1
        if replicas is None:
            return {"vllm_env": {}, "system_env": {}}
        parallel = {"data_parallel_size": replicas, "data_parallel_size_local": replicas,
                    "data_parallel_external_lb": False, "data_parallel_hybrid_lb": False}
        return {"vllm_config": {"parallel_config": parallel}, "vllm_env": {}, "system_env": {}}

    def enter(self, peer: int) -> None:
        """One more generate request in flight at ``peer``; waits for the gather (if any) before returning."""
        with self.lock:
            self.in_flight[peer] = self.in_flight.get(peer, 0) + 1
            self.peak[peer] = max(self.peak.get(peer, 0), self.in_flight[peer])
            self.lock.notify_all()
            want = self.gather[peer] if peer < len(self.gather) else 0
            self.lock.wait_for(lambda: self.in_flight[peer] >= want, timeout=self.gather_s)

    def leave(self, peer: int) -> None:
        with self.lock:
            self.in_flight[peer] -= 1


def _handler(state: PeerState, peer: int) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, payload: Any) -> None:
            body = json.dumps(payload).encode("utf-8")
            try:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up first (the stall case)
                pass

        def do_GET(self) -> None:
            path = urlsplit(self.path).path
            if path == "/v1/models":
                self._reply(200, {"data": [{"id": state.model, "root": state.model, "max_model_len": 1 << 20}]})
            elif path == "/server_info":
                self._reply(200, state.server_info(peer))
            elif path == "/health":
                self._reply(200, {})
            else:
                self._reply(404, {"detail": "not found"})

        def do_POST(self) -> None:
            size = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(size) or b"{}")
            if self.path != "/inference/v1/generate":
                self._reply(200, {})  # weight reload and cache resets
                return
            if "token_ids" not in body:
                self._reply(400, {"detail": "token_ids is required"})  # the preflight's empty probe
                return
            parts = body.get("content_parts") or [{}]
            entry = state.entries.get(parts[0].get("url", ""))
            if entry is None:
                self._reply(400, {"detail": "unknown prompt"})
                return
            with state.lock:
                state.posts.append({"index": entry.index, "collapsed": tuple(body["token_ids"]) == entry.collapsed,
                                    "sampling": body["sampling_params"], "port": self.server.server_address[1]})
            state.enter(peer)
            try:
                time.sleep(state.stall_s)
            finally:
                state.leave(peer)
            self._reply(200, {"prompt_token_ids": list(entry.prompt_ids),
                              "choices": [{"token_ids": list(entry.completion_ids), "finish_reason": state.finish_reason}]})

        def log_message(self, *args: Any) -> None:
            pass

    return Handler


class Peers:
    """``count`` peers on free local ports, serving until ``close``."""

    def __init__(self, count: int, state: PeerState) -> None:
        self.state = state
        self.servers = [ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, i)) for i in range(count)]
        for server in self.servers:
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()

    @property
    def urls(self) -> list[str]:
        return [f"http://127.0.0.1:{s.server_address[1]}" for s in self.servers]

    def server_of(self, post: Mapping[str, Any]) -> int:
        return [s.server_address[1] for s in self.servers].index(post["port"])

    def scrub(self, text: str) -> str:
        """A message with each peer's URL replaced by ``<server i>`` (ports differ run to run)."""
        for i, url in enumerate(self.urls):
            text = text.replace(url, f"<server {i}>")
        return text

    def close(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def by_server(peers: Peers, posts: Sequence[Mapping[str, Any]]) -> list[list[int]]:
    """Per peer, the sample indices it was asked for, sorted (requests of a chunk are in flight together)."""
    out: list[list[int]] = [[] for _ in peers.servers]
    for post in posts:
        out[peers.server_of(post)].append(post["index"])
    return [sorted(x) for x in out]
