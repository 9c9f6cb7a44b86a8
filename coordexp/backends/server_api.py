"""One rollout server's endpoints, behind an adapter, so another server kind (the legacy ``swift rollout``) fits.

``RolloutServerApi`` is what ``coordexp.backends.vllm_server`` needs from a server: health, the preflight
checks, token-in / token-out generation with images, and the two weight-sync paths. ``VllmApi`` targets
the OpenAI-compatible server of the installed vLLM (0.32: ``python -m vllm.entrypoints.openai.api_server``),
whose endpoints were read from its source:

- ``GET /health`` (200 when the engine serves), ``GET /v1/models`` (served name, ``root``, ``max_model_len``);
- ``POST /inference/v1/generate`` (needs ``--enable-scale-out``, else 403): ``token_ids`` with one image
  placeholder per image, images as ``content_parts`` data URLs; the reply carries the expanded
  ``prompt_token_ids`` and ``choices[0].token_ids``;
- full weights: ``POST /collective_rpc {"method": "reload_weights", "kwargs": {"weights_path": DIR}}``
  (registered only with ``VLLM_SERVER_DEV_MODE=1``; ``GET /server_info`` is its probe), then
  ``/reset_encoder_cache`` and ``/reset_prefix_cache`` (a stale encoder cache fails the next image request);
- data parallelism: ``GET /server_info?config_format=json`` (dev mode too) answers the engine's ``VllmConfig``
  as JSON, ``{"vllm_config": {"parallel_config": {"data_parallel_size": N, ...}, ...}, "vllm_env": ..., ...}``;
  the client keeps ``decode_batch_size`` requests in flight per replica (``replicas_of_server_info``);
- adapters: ``POST /v1/load_lora_adapter {"lora_name", "lora_path", "load_inplace": true}`` (needs
  ``--enable-lora`` and ``VLLM_ALLOW_RUNTIME_LORA_UPDATING=True``), then requests name the adapter as model.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import attrs

from coordexp.backends.http_json import (
    NO_RETRY,
    RetryPolicy,
    ServerError,
    ServerMalformed,
    ServerRefused,
    call_json,
)

HEALTH_PROBE_TIMEOUT_S = 5.0  # one health probe; the caller's wait loop repeats it until timeout_s


@attrs.frozen
class ServerPrompt:
    """A prompt as a server takes it: ids with one image placeholder per image, and the images themselves."""

    token_ids: tuple[int, ...]
    image_urls: tuple[str, ...]  # data:image/png;base64,...


@attrs.frozen
class ServerReply:
    prompt_ids: tuple[int, ...]  # the server's expanded prompt (compared with the learner's encoding)
    completion_ids: tuple[int, ...]
    finish_reason: str | None
    raw: dict[str, Any]  # the reply as received (debug dumps)
    request: dict[str, Any] = attrs.Factory(dict)  # the body as sent (debug dumps)


@attrs.frozen
class ServedModel:
    name: str  # what requests name as "model"
    root: str  # the folder it was loaded from
    max_model_len: int | None


@attrs.frozen
class Check:
    """One preflight check: its name (what the troubleshooting guide lists), and the problem, if any."""

    name: str
    problem: str | None = None


class RolloutServerApi(Protocol):
    base_url: str

    def healthy(self) -> str | None:
        """None when the server serves; else why not (one probe, a few seconds at most)."""
        ...

    def preflight(self, *, model: str, max_model_len: int, sync_mode: str, timeout: float) -> list[Check]: ...

    def sync_check(self, sync_mode: str, timeout: float) -> Check: ...

    def data_parallel_size(self, *, timeout: float) -> int:
        """How many engine replicas serve this endpoint; ``ServerError`` when the server does not say."""
        ...

    def generate(self, prompt: ServerPrompt, sampling: dict[str, Any], *, model: str | None,
                 timeout: float | None, retry: RetryPolicy) -> ServerReply: ...

    def reload_full_weights(self, folder: Path, *, timeout: float) -> None: ...

    def load_adapter(self, name: str, folder: Path, *, timeout: float) -> None: ...


def image_data_url(image: Any) -> str:
    """A PIL image as a lossless PNG data URL (the server decodes the very pixels the learner encoded)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def collapse_image_pads(ids: Sequence[int], image_pad_id: int) -> tuple[int, ...]:
    """The learner's ids with each run of image-pad tokens cut to one: the server expands it again."""
    out: list[int] = []
    for tok in ids:
        if tok == image_pad_id and out and out[-1] == image_pad_id:
            continue
        out.append(int(tok))
    return tuple(out)


def _int_list(value: Any) -> tuple[int, ...] | None:
    if not isinstance(value, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
        return None
    return tuple(value)


class VllmApi:
    """The installed vLLM's OpenAI-compatible server (see the module docstring)."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url

    def _url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def healthy(self) -> str | None:
        try:
            call_json("GET", self._url("/health"), timeout=HEALTH_PROBE_TIMEOUT_S, retry=NO_RETRY, expect_json=False)
        except ServerError as exc:
            return str(exc)
        return None

    def served_models(self, *, timeout: float) -> list[ServedModel]:
        url = self._url("/v1/models")
        reply = call_json("GET", url, timeout=timeout)
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, list) or not all(isinstance(m, dict) and isinstance(m.get("id"), str) for m in data):
            raise ServerMalformed(f"GET {url}: no `data` list of models in {str(reply)[:300]}", url=url, attempts=1)
        return [ServedModel(m["id"], str(m.get("root") or m["id"]), m.get("max_model_len")) for m in data]

    def preflight(self, *, model: str, max_model_len: int, sync_mode: str, timeout: float) -> list[Check]:
        """The checks after health: token endpoint, served model, max length, weight-sync endpoints."""
        checks = [self._token_endpoint(timeout)]
        try:
            served = self.served_models(timeout=timeout)
        except ServerError as exc:
            return [*checks, Check("served model name", str(exc))]
        checks.append(_served_model_check(served, model))
        checks.append(_max_length_check(served, max_model_len))
        checks.append(self.sync_check(sync_mode, timeout))
        return checks

    def data_parallel_size(self, *, timeout: float) -> int:
        url = self._url("/server_info?config_format=json")
        return replicas_of_server_info(call_json("GET", url, timeout=timeout), url)

    def _probe_status(self, method: str, path: str, timeout: float) -> int:
        """The HTTP status of an empty request (a 400 proves the route exists and validates bodies)."""
        try:
            call_json(method, self._url(path), {} if method == "POST" else None, timeout=timeout, retry=NO_RETRY,
                      expect_json=False)
        except ServerRefused as exc:
            return exc.status
        return 200

    def _token_endpoint(self, timeout: float) -> Check:
        name = "token-in/token-out endpoint"
        status = self._probe_status("POST", "/inference/v1/generate", timeout)
        if status == 403:
            return Check(name, "POST /inference/v1/generate is disabled (HTTP 403): restart the server with "
                               "--enable-scale-out (python -m coordexp.launch does)")
        if status == 404:
            return Check(name, "the server has no POST /inference/v1/generate (HTTP 404): serve with vLLM 0.32 "
                               "(`python -m vllm.entrypoints.openai.api_server ... --enable-scale-out`)")
        return Check(name)

    def sync_check(self, sync_mode: str, timeout: float) -> Check:
        """Whether the endpoints of ``sync_mode`` (``full`` | ``adapter``) exist on this server."""
        if sync_mode == "adapter":
            name = "weight sync (adapter endpoint)"
            if self._probe_status("POST", "/v1/load_lora_adapter", timeout) == 404:
                return Check(name, "POST /v1/load_lora_adapter is missing (HTTP 404): start the server with "
                                   "--enable-lora and VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, or set vllm.sync.mode: full")
            return Check(name)
        name = "weight sync (reload endpoint)"
        if self._probe_status("GET", "/server_info", timeout) == 404:
            return Check(name, "the weight-reload endpoints (/collective_rpc, /reset_encoder_cache) are missing "
                               "(HTTP 404): start the server with VLLM_SERVER_DEV_MODE=1 (python -m coordexp.launch does)")
        return Check(name)

    def generate(self, prompt: ServerPrompt, sampling: dict[str, Any], *, model: str | None,
                 timeout: float | None, retry: RetryPolicy) -> ServerReply:
        body = generate_body(prompt, sampling, model=model)
        url = self._url("/inference/v1/generate")
        reply = parse_generate_reply(call_json("POST", url, body, timeout=timeout, retry=retry), url)
        return attrs.evolve(reply, request=body)

    def reload_full_weights(self, folder: Path, *, timeout: float) -> None:
        call_json("POST", self._url("/collective_rpc"),
                  {"method": "reload_weights", "kwargs": {"weights_path": str(folder)}},
                  timeout=timeout, expect_json=False)
        self._reset_caches(timeout)

    def load_adapter(self, name: str, folder: Path, *, timeout: float) -> None:
        call_json("POST", self._url("/v1/load_lora_adapter"),
                  {"lora_name": name, "lora_path": str(folder), "load_inplace": True},
                  timeout=timeout, retry=NO_RETRY, expect_json=False)
        self._reset_caches(timeout)

    def _reset_caches(self, timeout: float) -> None:
        call_json("POST", self._url("/reset_encoder_cache"), timeout=timeout, expect_json=False)
        url = self._url("/reset_prefix_cache")
        reply = call_json("POST", url, timeout=timeout, expect_json=False)
        if isinstance(reply, dict) and reply.get("success") is False:
            raise ServerMalformed(f"POST {url} answered success=false (requests still running during a weight "
                                  "sync?); the server may serve stale prefixes", url=url, attempts=1)


def generate_body(prompt: ServerPrompt, sampling: dict[str, Any], *, model: str | None) -> dict[str, Any]:
    """The ``POST /inference/v1/generate`` body: ids, images, sampling params, and the ask for token ids back."""
    body: dict[str, Any] = {"token_ids": list(prompt.token_ids), "sampling_params": sampling, "return_token_ids": True}
    if prompt.image_urls:
        body["content_parts"] = [{"type": "image_url", "url": u} for u in prompt.image_urls]
    if model is not None:
        body["model"] = model
    return body


def parse_generate_reply(reply: Any, url: str) -> ServerReply:
    """The fields coordexp needs from a generate reply; a missing or mistyped one is ``ServerMalformed``."""
    def bad(what: str) -> ServerMalformed:
        return ServerMalformed(f"POST {url}: malformed reply ({what}): {str(reply)[:300]}", url=url, attempts=1)

    if not isinstance(reply, dict):
        raise bad("not a JSON object")
    choices = reply.get("choices")
    if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], dict):
        raise bad("`choices` is not a list of one choice")
    completion = _int_list(choices[0].get("token_ids"))
    if completion is None:
        raise bad("`choices[0].token_ids` is not a list of token ids")
    prompt = _int_list(reply.get("prompt_token_ids"))
    if prompt is None:
        raise bad("`prompt_token_ids` is not a list of token ids (was return_token_ids honoured?)")
    reason = choices[0].get("finish_reason")
    return ServerReply(prompt, completion, reason if isinstance(reason, str) else None, reply)


def replicas_of_server_info(reply: Any, url: str) -> int:
    """The engine replicas behind one endpoint, from vLLM 0.32's ``/server_info`` JSON: ``data_parallel_size``,
    except that an endpoint of an external load balancer fronts one rank and a hybrid one its node's ranks."""
    config = reply.get("vllm_config") if isinstance(reply, dict) else None
    parallel = config.get("parallel_config") if isinstance(config, dict) else None
    size = parallel.get("data_parallel_size") if isinstance(parallel, dict) else None
    if not isinstance(size, int) or isinstance(size, bool) or size < 1:
        raise ServerMalformed(f"GET {url}: no `vllm_config.parallel_config.data_parallel_size` (a positive int) in "
                              f"{str(reply)[:300]}", url=url, attempts=1)
    if parallel.get("data_parallel_external_lb") is True:
        return 1
    local = parallel.get("data_parallel_size_local")
    if parallel.get("data_parallel_hybrid_lb") is True and isinstance(local, int) and 1 <= local <= size:
        return local
    return size


def _served_model_check(served: list[ServedModel], model: str) -> Check:
    name = "served model name"
    want = _resolved(model)
    if any(_resolved(m.root) == want or _resolved(m.name) == want for m in served):
        return Check(name)
    listed = ", ".join(f"{m.name} (from {m.root})" for m in served) or "nothing"
    return Check(name, f"the server serves {listed}, not model.model ({model}): the first rollouts would come from "
                       f"another model; start it with --model {model}")


def _max_length_check(served: list[ServedModel], need: int) -> Check:
    name = "max length"
    lengths = [m.max_model_len for m in served if isinstance(m.max_model_len, int)]
    if lengths and max(lengths) < need:
        return Check(name, f"the server holds {max(lengths)} tokens per sequence but the config budgets {need} "
                           "(vllm.max_model_len, else global_max_length): restart it with "
                           f"--max-model-len {need}, or lower the budget")
    return Check(name)


def _resolved(path: str) -> str:
    try:
        return str(Path(path).expanduser().resolve())
    except (OSError, RuntimeError):
        return path
