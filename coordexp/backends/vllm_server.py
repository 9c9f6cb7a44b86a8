"""The ``vllm_server`` rollout backend: the client of separate vLLM servers on other GPUs (3v1, 7v1 topologies).

Why it looks the way it does:
- It waits for every server before training starts, then runs the preflight checks (token endpoint, served
  model, max length, weight-sync endpoints) and fails with the one that failed, named as in
  docs/backends.md (troubleshooting), instead of hanging at the first Channel-B step.
- Token in, token out: the learner's prompt ids go out with each run of image-pad tokens cut to one and
  the images as PNG data URLs; the server expands the placeholders, and its expanded ``prompt_token_ids``
  must equal the learner's encoding exactly (else an error naming the sample): the teacher-forced target
  is built on the learner's ids, so a server that saw another prompt would train on a wrong prefix.
  Completion ids come back as ids and are never re-tokenized.
- Requests go out in ``decode_batch_size`` chunks, the chunks spread over the S servers as contiguous runs
  weighted by each server's data-parallel size (read from ``/server_info`` at the start checks, 1 with a
  warning when the server does not say), and each server keeps one chunk per replica in flight
  (``coordexp.backends.dispatch.server_batches``): a DP-3 server behind one URL gets 3 chunks at once, so every
  rollout GPU stays busy without scaling ``decode_batch_size`` by hand. A result's ``seconds`` is the wall time
  of the batch it was in flight with, as in the HF backend. Sampling seeds are per request, from the call's
  seed and the request's index, so a retried request (or another spread) draws the same tokens.
- Finish reasons, the stop-rule name and ``new_tokens`` follow the HF backend: ids end at the first EOS,
  the stop rules run inside the server (``coordexp.backends.vllm_stop_rules``, per request) and are
  replayed over the returned ids to name the rule that fired; Parse still makes the final cut.
- Every call has bounded retries with backoff (``coordexp.backends.http_json``); a server that is gone,
  stalls past ``infer_timeout_s`` or answers malformed ends the step with an error naming it.
- At start every server reloads ``model.model`` (a server that outlived an earlier run would serve its last
  weights). Weight sync happens after an optimizer step that changed the trainable weights (a digest
  tells), and before the first rollout when the weights differ from the start (a resumed run): full
  sync writes the merged weights to ``<run>/vllm_server_sync/weights_NNNNN`` and reloads them on every server,
  adapter sync writes the adapter and reloads it in place; a failed adapter sync falls back to full when
  ``vllm.sync.fallback_to_full`` says so, and says so.
"""

from __future__ import annotations

import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch

from coordexp.backends.completion import check_request, eos_ids, finished, seed_for
from coordexp.backends.dispatch import server_batches
from coordexp.backends.http_json import RetryPolicy, ServerError, ServerGone, ServerMalformed, ServerStalled
from coordexp.backends.protocol import DecodingConfig, RolloutRequest, RolloutResult
from coordexp.backends.server_api import (
    Check,
    RolloutServerApi,
    ServerPrompt,
    ServerReply,
    VllmApi,
    collapse_image_pads,
    image_data_url,
)
from coordexp.backends.server_dump import DebugDumper
from coordexp.backends.stop_rules_args import stop_rules_args
from coordexp.backends.vllm_weights import WeightFolders, adapter_blocker
from coordexp.backends.weight_export import weights_fingerprint
from coordexp.bind.server import ServerPlan
from coordexp.core.repeat import StopRules, StopRulesConfig
from coordexp.core.tokens import TokenContext
from coordexp.errors import ConfigError, RolloutError

log = logging.getLogger("coordexp")
RM = "custom.extra.rollout_matching"
SYNC_DIR = "vllm_server_sync"
ADAPTER_NAME = "coordexp-policy"
HEALTH_POLL_S = 1.0
PROGRESS_EVERY_S = 15.0
DEFAULT_RETRY = RetryPolicy()  # 3 attempts, 0.5 s then 1 s apart


def sampling_params(dec: DecodingConfig, *, eos_ids: Sequence[int], seed: int | None,
                    stop_args: dict[str, Any] | None) -> dict[str, Any]:
    """vLLM ``SamplingParams`` fields of a decoding config (greedy neutralises the sampling knobs, as in HF)."""
    sampling = dec.temperature > 0
    params: dict[str, Any] = {
        "n": 1,
        "max_tokens": dec.max_new_tokens,
        "temperature": dec.temperature if sampling else 0.0,
        "top_p": dec.top_p if sampling else 1.0,
        "top_k": dec.top_k if sampling and dec.top_k != -1 else 0,  # vLLM: 0 = off
        "repetition_penalty": dec.repetition_penalty,
        "stop_token_ids": sorted(eos_ids),
        "skip_special_tokens": False,
    }
    if sampling and seed is not None:
        params["seed"] = seed
    if stop_args:
        params["extra_args"] = stop_args
    return params


class VllmServerBackend:
    """Rollouts from external vLLM servers (see the module docstring)."""

    name = "vllm_server"

    def __init__(
        self,
        *,
        model: torch.nn.Module,
        processor: Any,
        ctx: TokenContext,
        decoding: DecodingConfig,
        stop_rules: StopRulesConfig,
        server: ServerPlan | None,
        run_dir: Path | None = None,
        step_of: Callable[[], int] | None = None,
        apis: Sequence[RolloutServerApi] | None = None,
        retry: RetryPolicy = DEFAULT_RETRY,
    ) -> None:
        if server is None:
            raise ConfigError([f"{RM}.vllm.mode: the vllm_server backend needs rollout_backend: vllm and "
                               "vllm.mode: server with vllm.server.servers"])
        if decoding.decode_mode == "beam":
            raise ConfigError([f"{RM}.decode_mode: vLLM servers decode greedily or by sampling, not by beams; "
                               "use rollout_backend: hf for beam search"])
        self.plan, self.decoding, self.retry = server, decoding, retry
        self._model: torch.nn.Module | None = model
        self.rules = StopRules(stop_rules, ctx, eos_ids=eos_ids(model))
        self.eos_ids = sorted(self.rules.eos_ids)
        self.stop_args = stop_rules_args(stop_rules, self.eos_ids) if self.rules.cfg.active else None
        self.tokenizer = processor.tokenizer
        self.image_pad_id = int(self.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
        self.apis = list(apis) if apis is not None else [VllmApi(e.base_url) for e in server.servers]
        self.step_of = step_of or (lambda: 0)
        self.run_dir = run_dir if run_dir is not None else Path(tempfile.mkdtemp(prefix="coordexp-server-sync-"))
        self.folders = WeightFolders(self.run_dir / SYNC_DIR)  # weights_NNNNN/, adapter_NNNNN/: the newest stays
        self.sync_mode = server.sync_mode
        self.stats = {"syncs_full": 0, "syncs_adapter": 0, "sync_fallbacks": 0, "sync_seconds": 0.0,
                      "replicas_unknown": 0}
        rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
        self.dumper = DebugDumper(server.debug_dump, self.run_dir, rank=rank, world=world)
        self._adapter_loaded = False
        self.replicas = [1] * len(self.apis)  # per server: its data-parallel size, learned by the preflight
        self.preflight()
        self._load_start_weights()
        self._synced = weights_fingerprint(model)  # the servers now hold model.model, the learner's start
        self._check_before_generate = True  # a resume restores weights after this constructor runs

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            raise RolloutError("the vllm_server backend was closed; build a new one to generate again")
        return self._model

    # -- preflight ---------------------------------------------------------------------------------------
    def preflight(self) -> None:
        """Wait for every server's health (``timeout_s``), then run the checks; every failure is listed at once."""
        for api in self.apis:
            self._wait_healthy(api)
        blocker = adapter_blocker(self.model) if self.sync_mode == "adapter" else None
        if blocker is not None and not self._fall_back(Check("adapter", blocker)):
            raise ConfigError([f"{RM}.vllm.sync.mode: adapter sync cannot work here: {blocker}. Fix: sync.mode: full, "
                               "or sync.fallback_to_full: true"])
        problems = []
        for api in self.apis:
            for check in api.preflight(model=self.plan.model, max_model_len=self.plan.max_model_len,
                                       sync_mode=self.sync_mode, timeout=self.plan.timeout_s):
                if check.problem is not None and check.name.startswith("weight sync") and self._fall_back(check):
                    check = api.sync_check("full", self.plan.timeout_s)
                if check.problem is not None:
                    problems.append(f"{api.base_url}: {check.name} check failed: {check.problem}")
        if problems:
            raise RolloutError("vLLM server preflight failed (docs/backends.md, troubleshooting):\n  - "
                               + "\n  - ".join(problems))
        self.replicas = [self._replicas_of(api) for api in self.apis]

    def _replicas_of(self, api: RolloutServerApi) -> int:
        """The server's data-parallel size; 1 (and a warning, counted) when it cannot be read: the run works, but
        a data-parallel server then has only ``decode_batch_size`` requests in flight."""
        try:
            replicas = api.data_parallel_size(timeout=self.plan.timeout_s)
        except ServerError as exc:
            self.stats["replicas_unknown"] += 1
            log.warning("%s: cannot read its data-parallel size (%s); sending it %d request(s) at a time, as to one "
                        "replica. Fix: serve it with VLLM_SERVER_DEV_MODE=1 (python -m coordexp.launch does), whose "
                        "GET /server_info tells", api.base_url, exc, self.decoding.decode_batch_size)
            return 1
        if replicas > 1:
            log.info("%s: %d data-parallel replicas: %d requests in flight", api.base_url, replicas,
                     replicas * self.decoding.decode_batch_size)
        return replicas

    def _fall_back(self, failed: Check) -> bool:
        """Adapter sync cannot work on this server: switch to full sync when fallback_to_full allows it."""
        if self.sync_mode != "adapter" or not self.plan.fallback_to_full:
            return False
        self.sync_mode = "full"
        self.stats["sync_fallbacks"] += 1
        log.warning("vLLM adapter sync is unavailable (%s); using full-weight sync for the whole run "
                    "(%s.vllm.sync.fallback_to_full: true)", failed.problem, RM)
        return True

    def _wait_healthy(self, api: RolloutServerApi) -> None:
        t0 = time.monotonic()
        next_note = t0 + PROGRESS_EVERY_S
        while True:
            problem = api.healthy()
            if problem is None:
                return
            now = time.monotonic()
            waited = now - t0
            if waited >= self.plan.timeout_s:
                raise RolloutError(
                    f"{api.base_url}: health check failed: GET /health did not answer 200 within "
                    f"{self.plan.timeout_s:g} s ({RM}.vllm.server.timeout_s); last: {problem}. Fix: start the "
                    "server (python -m coordexp.launch starts it and waits), or correct vllm.server.servers[].base_url"
                )
            if now >= next_note:
                log.info("waiting for %s/health (%.0f of %g s): %s", api.base_url, waited, self.plan.timeout_s, problem)
                next_note = now + PROGRESS_EVERY_S
            time.sleep(HEALTH_POLL_S)

    # -- weight sync -------------------------------------------------------------------------------------
    def _load_start_weights(self) -> None:
        """Reload ``model.model`` on every server: a server that outlived an earlier run (or an earlier sync)
        would otherwise serve that run's last weights; it also proves the reload path works before step 0."""
        start = Path(self.plan.model).resolve()
        for api in self.apis:
            try:
                api.reload_full_weights(start, timeout=self.plan.timeout_s)
            except ServerError as exc:
                raise RolloutError(f"{api.base_url}: weight sync check failed: reloading model.model ({start}) "
                                   f"failed: {exc}. The server must read the learner's folders (same machine or a "
                                   "shared file system) and run with VLLM_SERVER_DEV_MODE=1") from exc

    def sync_weights(self, model: object) -> None:
        """Push the weights when an optimizer step changed them (full merged weights or the adapter)."""
        if not isinstance(model, torch.nn.Module):
            raise RolloutError(f"vllm_server backend: sync_weights needs the torch model, got {type(model).__name__}")
        self._model = model
        self._sync_if_changed()

    def _sync_if_changed(self) -> None:
        digest = weights_fingerprint(self.model)
        if digest == self._synced:
            return
        t0 = time.perf_counter()
        if self.sync_mode == "adapter" and not self._try_adapter_sync():
            self.sync_mode = "full"
        if self.sync_mode == "full":
            self._full_sync()
        self._synced = digest
        self.stats["sync_seconds"] += time.perf_counter() - t0

    def _full_sync(self) -> None:
        folder = self.folders.merged(self.model)
        for api in self.apis:
            try:
                api.reload_full_weights(folder.resolve(), timeout=self.plan.timeout_s)
            except ServerError as exc:
                raise RolloutError(f"{api.base_url}: weight sync (full reload of {folder}) failed: {exc}. The "
                                   "server must read the learner's run folder (same machine or a shared file "
                                   "system) and run with VLLM_SERVER_DEV_MODE=1") from exc
        self._adapter_loaded = False  # the reload reset the engine's adapters
        self.stats["syncs_full"] += 1

    def _try_adapter_sync(self) -> bool:
        problem = adapter_blocker(self.model)
        if problem is None:
            folder = self.folders.adapter(self.model)
            try:
                for api in self.apis:
                    api.load_adapter(ADAPTER_NAME, folder.resolve(), timeout=self.plan.timeout_s)
            except ServerError as exc:
                problem = str(exc)
        if problem is not None:
            if not self.plan.fallback_to_full:
                raise RolloutError(f"weight sync (adapter) failed: {problem}. Fix: set {RM}.vllm.sync.fallback_to_full: "
                                   "true or sync.mode: full")
            self.stats["sync_fallbacks"] += 1
            log.warning("vLLM adapter sync failed (%s); falling back to full-weight sync for the rest of the run "
                        "(%s.vllm.sync.fallback_to_full: true)", problem, RM)
            return False
        self._adapter_loaded = True
        self.stats["syncs_adapter"] += 1
        return True

    # -- generation ----------------------------------------------------------------------------------------
    @property
    def parallel_requests(self) -> int:
        """Requests in flight in one ``generate`` call: ``decode_batch_size`` per data-parallel replica."""
        return self.decoding.decode_batch_size * sum(self.replicas)

    def generate(self, requests: Sequence[RolloutRequest], *, seed: int | None = None) -> list[RolloutResult]:
        """One result per request, in request order (chunks of ``decode_batch_size``, one per replica in flight)."""
        if self.decoding.samples and seed is None:
            raise RolloutError("vllm_server backend: sampling (decoding.temperature > 0) needs a seed per generate "
                               "call so that rollouts are reproducible; pass seed=...")
        if self._check_before_generate:
            self._sync_if_changed()
            self._check_before_generate = False
        if not requests:
            return []
        plan = server_batches(len(requests), chunk=self.decoding.decode_batch_size, replicas=self.replicas)
        per_server = [[(start, requests[start:end]) for start, end in mine] for mine in plan]
        results: list[RolloutResult | None] = [None] * len(requests)
        replies: list[ServerReply | None] = [None] * len(requests)
        with ThreadPoolExecutor(max_workers=self.parallel_requests, thread_name_prefix="coordexp-server") as pool:
            lock = threading.Lock()

            def run_server(api: RolloutServerApi, mine: list[tuple[int, Sequence[RolloutRequest]]]) -> None:
                for start, batch in mine:
                    t0 = time.perf_counter()
                    futures = [pool.submit(self._one, api, req, start + i, seed) for i, req in enumerate(batch)]
                    got = [f.result() for f in futures]
                    seconds = time.perf_counter() - t0
                    with lock:
                        for i, (req, reply) in enumerate(zip(batch, got, strict=True)):
                            replies[start + i] = reply
                            results[start + i] = self._result(req, reply, seconds)

            with ThreadPoolExecutor(max_workers=len(self.apis), thread_name_prefix="coordexp-dispatch") as outer:
                jobs = [outer.submit(run_server, api, mine) for api, mine in zip(self.apis, per_server, strict=True)
                        if mine]
                for job in jobs:
                    job.result()
        missing = [requests[i].sample_id for i, r in enumerate(results) if r is None]
        if missing:  # every batch either filled its slots or raised: a gap is a bug in this dispatch
            raise RolloutError(f"vllm_server backend: no result for samples {missing[:5]}")
        self._maybe_dump(requests, replies, results)
        return [r for r in results if r is not None]

    def _one(self, api: RolloutServerApi, req: RolloutRequest, index: int, seed: int | None) -> ServerReply:
        check_request(req)
        prompt = ServerPrompt(collapse_image_pads(req.prompt_ids, self.image_pad_id),
                              tuple(image_data_url(im) for im in req.images))
        params = sampling_params(self.decoding, eos_ids=self.eos_ids,
                                 seed=seed_for(seed, index) if seed is not None else None, stop_args=self.stop_args)
        try:
            reply = api.generate(prompt, params, model=ADAPTER_NAME if self._adapter_loaded else None,
                                 timeout=self.plan.infer_timeout_s, retry=self.retry)
        except ServerError as exc:
            raise RolloutError(f"sample {req.sample_id}: rollout on {api.base_url} failed: {exc}. "
                               f"{_fault_hint(exc)}") from exc
        if reply.prompt_ids != req.prompt_ids:
            raise RolloutError(_prompt_mismatch(req, reply, api.base_url))
        return reply

    def _result(self, req: RolloutRequest, reply: ServerReply, seconds: float) -> RolloutResult:
        """Completion ids up to and including the first EOS, the rule that fired, the finish reason (as in HF)."""
        return finished(req, reply.completion_ids, self.rules, seconds)

    def _maybe_dump(self, requests: Sequence[RolloutRequest], replies: list[ServerReply | None],
                    results: list[RolloutResult | None]) -> None:
        step = self.step_of()
        if not self.dumper.due(step):
            return
        samples = []
        for req, reply, result in zip(requests, replies, results, strict=True):
            if reply is None or result is None:
                continue
            text = self.tokenizer.decode(list(result.rollout.completion_ids), skip_special_tokens=False)
            samples.append((req.sample_id, reply.request, reply.raw, text))
        self.dumper.write(step, samples)

    def close(self) -> None:
        self._model = None


def _prompt_mismatch(req: RolloutRequest, reply: ServerReply, url: str) -> str:
    mine, theirs = req.prompt_ids, reply.prompt_ids
    at = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
    return (f"sample {req.sample_id}: the prompt ids {url} expanded differ from the learner's encoding at position "
            f"{at} ({len(theirs)} vs {len(mine)} ids; server {list(theirs[at : at + 4])} vs learner "
            f"{list(mine[at : at + 4])}): the server's processor or tokenizer is not the learner's. Serve the same "
            "checkpoint folder (model.model) with the same max_pixels")


def _fault_hint(exc: ServerError) -> str:
    if isinstance(exc, ServerGone):
        return "The server is gone (process ended or port closed): check its log, restart it or the launcher"
    if isinstance(exc, ServerStalled):
        return (f"The server stalled: raise {RM}.vllm.server.infer_timeout_s if rollouts are long, else check "
                "that the server process is running (not stopped or swapped out)")
    if isinstance(exc, ServerMalformed):
        return "The reply is not what vLLM 0.32's /inference/v1/generate returns: is this a vLLM server?"
    return "See the server's log for the request it refused"
