"""Runner for ``Transition: backend``: rollout dispatch, seeds, server requests and offload, through the real code.

Input: one case or ``{"cases": [...]}``; each case names its ``kind``:

- ``request``: ``{"config": [--set overrides], "seed": 7}``: the body ``VllmApi.generate`` posts for one prompt
  with one image (``sampling_params`` of the bound decoding + ``generate_body``); the image URL is shown by size;
- ``slices``: ``{"n": 5, "parts": 3}`` or ``{"n": 10, "weights": [1, 2, 1]}``: ``coordexp.backends.dispatch``'s
  slices, and whether ``reassemble`` of the per-slice items gives ``0..n-1`` in order;
- ``spread``: ``{"n": 5, "chunk": 2, "servers": 2}``: each server's chunks (``spread_chunks``);
- ``server``: a ``VllmServerBackend`` of the tiny model (``hf_backend``'s requests of synthetic samples) against
  ``servers`` local peers (``_server_peer``), ``config`` overrides, ``completions`` (texts, EOS appended), the
  peers' ``finish_reason``, ``stall_s``, the call ``seed`` (an int, or ``{"training_seed", "step"}`` for the
  step's rollout seed), ``close_first`` (generate after ``close``). Output: the dispatch plan, the samples each
  server was asked for, per sample the seed its POST carried, whether stop-rule args went out, and the results
  in input order (or the error, server URLs shown as ``<server i>``);
- ``seed``: ``{"training_seed": 123, "step": 7}``: ``Runtime.rollout_seed`` of that step, twice, and of its
  evaluation;
- ``hf_seed``: ``{"seed": 123, "config": [...]}``: two sampling ``HFBackend.generate`` calls on the tiny model
  with the same seed: whether torch's and Python's global RNG states are unchanged and the completions equal;
- ``offload``: ``{"offload_model": bool, "offload_optimizer": bool, "fail": bool}``: ``vllm_weights.Offload``
  around a phase on a tiny linear model and its Adam state (after one step): devices and storage inside and
  after the phase, and whether a phase's error comes out unchanged;
- ``config``: a ``config`` runner case (``{"yaml", "overrides", "world_size"}``): load + validate.
"""

from __future__ import annotations

import random
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from coordexp.errors import CoordexpError, RolloutError, SpecError
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "backend"
RM = "custom.extra.rollout_matching"
_SERVER_KEYS = {"kind", "servers", "config", "samples", "completions", "finish_reason", "stall_s", "seed",
                "close_first"}


def _check(case: Mapping[str, Any], allowed: set[str]) -> None:
    if not set(case) <= allowed | {"kind"}:
        raise SpecError(f"backend fixture case {case.get('kind')!r}: keys must be among {sorted(allowed)}, "
                        f"got {sorted(case)}")


def _request(case: Mapping[str, Any]) -> dict[str, Any]:
    from PIL import Image

    from coordexp.backends.server_api import ServerPrompt, collapse_image_pads, generate_body, image_data_url
    from coordexp.backends.vllm_server import sampling_params
    from coordexp.bind import bind_decoding, minimal_config
    from coordexp.data.tiny import fixture_tokenizer

    _check(case, {"config", "seed"})
    tok = fixture_tokenizer()
    im_end, pad = tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|image_pad|>")
    dec = bind_decoding(minimal_config("rollout_matching_sft", tuple(case.get("config", ()))))
    params = sampling_params(dec, eos_ids=[im_end], seed=case.get("seed"), stop_args=None)
    url = image_data_url(Image.new("RGB", (4, 4), (200, 10, 10)))
    body = generate_body(ServerPrompt(collapse_image_pads([11, pad, pad, pad, 12], pad), (url,)), params, model=None)
    for part in body.get("content_parts", ()):
        part["url"] = f"{part['url'].split(',')[0]},<{len(part['url'])} chars>"
    return {"body": body, "im_end_id": im_end, "image_pad_id": pad}


def _slices(case: Mapping[str, Any]) -> dict[str, Any]:
    from coordexp.backends.dispatch import even_slices, reassemble, weighted_slices

    _check(case, {"n", "parts", "weights"})
    n = case["n"]
    slices = weighted_slices(n, case["weights"]) if "weights" in case else even_slices(n, case["parts"])
    items = list(range(n))
    back = reassemble([items[a:b] for a, b in slices], slices)
    return {"slices": [list(s) for s in slices], "reassembled_in_order": back == items}


def _spread(case: Mapping[str, Any]) -> dict[str, Any]:
    from coordexp.backends.dispatch import spread_chunks

    _check(case, {"n", "chunk", "servers"})
    plan = spread_chunks(case["n"], chunk=case["chunk"], weights=[1] * case["servers"])
    return {"per_server": [[list(c) for c in mine] for mine in plan],
            "in_flight_per_server": [max((b - a for a, b in mine), default=0) for mine in plan]}


def _rollout_seed(training_seed: int, step: int, is_eval: bool = False) -> int:
    from types import SimpleNamespace

    from coordexp.runtime import Runtime
    from coordexp.stages import StepState

    # the real rule (Runtime.rollout_seed reads only the run's seed and the step)
    return Runtime.rollout_seed(SimpleNamespace(seed=training_seed), StepState(step=step, channel="B", is_eval=is_eval))


def _seed(case: Mapping[str, Any]) -> dict[str, Any]:
    _check(case, {"training_seed", "step"})
    first = _rollout_seed(case["training_seed"], case["step"])
    return {"rollout_seed": first, "same_on_repeat": first == _rollout_seed(case["training_seed"], case["step"]),
            "eval_rollout_seed": _rollout_seed(case["training_seed"], case["step"], is_eval=True)}


def _server(case: Mapping[str, Any]) -> dict[str, Any]:
    from coordexp.backends.dispatch import server_batches
    from coordexp.backends.http_json import NO_RETRY
    from coordexp.backends.server_api import collapse_image_pads, image_data_url
    from coordexp.backends.vllm_server import VllmServerBackend
    from coordexp.bind import bind_decoding, bind_stop_rules, minimal_config
    from coordexp.bind.server import bind_server
    from coordexp.spec.runners._server_peer import Entry, Peers, PeerState, by_server
    from coordexp.spec.runners.hf_backend import _requests, _tiny

    _check(case, _SERVER_KEYS)
    tiny, ctx = _tiny()
    requests = _requests(case["samples"])
    pad = int(tiny.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"))
    texts = case.get("completions") or ["{}"] * len(requests)
    entries = {}
    for i, (req, text) in enumerate(zip(requests, texts, strict=True)):
        url = image_data_url(req.images[0])
        if url in entries:
            raise SpecError(f"backend fixture: samples {entries[url].index} and {i} have the same image")
        entries[url] = Entry(i, collapse_image_pads(req.prompt_ids, pad), req.prompt_ids,
                             (*ctx.encode_fragment(text), ctx.im_end_id))
    state = PeerState("tiny", entries, case.get("finish_reason", "stop"), float(case.get("stall_s", 0.0)))
    peers = Peers(int(case.get("servers", 1)), state)
    servers = ", ".join(f'{{base_url: "{u}", group_port: 51216}}' for u in peers.urls)
    overrides = (f"{RM}.rollout_backend=vllm", f"{RM}.vllm.mode=server", f"{RM}.vllm.server.servers=[{servers}]",
                 *case.get("config", ()))
    seed = case.get("seed")
    if isinstance(seed, Mapping):
        seed = _rollout_seed(seed["training_seed"], seed["step"])
    out: dict[str, Any] = {}
    try:
        cfg = minimal_config("rollout_matching_sft", overrides)
        dec = bind_decoding(cfg)
        out = {
            "plan": [[list(c) for c in mine] for mine in server_batches(len(requests), chunk=dec.decode_batch_size,
                                                                        replicas=[1] * len(peers.urls))],
            "infer_timeout_s": bind_server(cfg).infer_timeout_s,
        }
        with tempfile.TemporaryDirectory() as tmp:
            backend = VllmServerBackend(model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=dec,
                                        stop_rules=bind_stop_rules(cfg), server=bind_server(cfg), run_dir=Path(tmp),
                                        retry=NO_RETRY)
            if case.get("close_first"):
                backend.close()
            results = backend.generate(requests, seed=seed)
            backend.close()
    except CoordexpError as exc:
        return {**out, "posts": len(state.posts),
                "error": {"type": type(exc).__name__, "message": peers.scrub(str(exc))}}
    finally:
        peers.close()
    seeds = {p["index"]: p["sampling"].get("seed") for p in state.posts}
    return {
        **out,
        "requested_per_server": by_server(peers, state.posts),
        "every_post_sent_the_collapsed_prompt": all(p["collapsed"] for p in state.posts),
        "seed_per_sample": [seeds.get(i) for i in range(len(requests))],
        "stop_rule_args_sent": sorted({"extra_args" in p["sampling"] for p in state.posts}),
        "prompt_tail_after_the_last_turn": _after_last_turn(requests[0].prompt_ids, ctx),
        "results": [{"sample_id": r.rollout.sample_id, "completion": ctx.text_of(r.rollout.completion_ids),
                     "finish_reason": r.rollout.finish_reason, "stop_rule": r.stop_rule, "new_tokens": r.new_tokens}
                    for r in results],
    }


def _after_last_turn(ids: tuple[int, ...], ctx: Any) -> str:
    """The prompt's text from its last ``<|im_end|>`` (the end of the user turn) on: what generation continues."""
    last = max(i for i, tok in enumerate(ids) if tok == ctx.im_end_id)
    return ctx.text_of(ids[last:])


def _hf_seed(case: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.backends.hf import HFBackend
    from coordexp.bind import bind_decoding, bind_stop_rules, minimal_config
    from coordexp.spec.runners.hf_backend import _requests, _tiny

    _check(case, {"seed", "config", "samples"})
    tiny, ctx = _tiny()
    cfg = minimal_config("rollout_matching_sft", tuple(case.get("config", ())))
    backend = HFBackend(model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=bind_decoding(cfg),
                        stop_rules=bind_stop_rules(cfg))
    requests = _requests(case.get("samples", [{"size": 32, "index": 0}, {"size": 32, "index": 1}]))
    random.seed(5)
    torch.manual_seed(5)
    torch_before, python_before = torch.get_rng_state(), random.getstate()
    first = [r.rollout.completion_ids for r in backend.generate(requests, seed=case["seed"])]
    torch_after, python_after = torch.get_rng_state(), random.getstate()
    second = [r.rollout.completion_ids for r in backend.generate(requests, seed=case["seed"])]
    return {"decode_mode": bind_decoding(cfg).decode_mode,
            "torch_rng_state_unchanged": bool(torch.equal(torch_before, torch_after)),
            "python_rng_state_unchanged": python_before == python_after,
            "same_seed_same_completions": first == second,
            "completion_lengths": [len(ids) for ids in first]}


def _offload(case: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.backends.vllm_weights import Offload

    _check(case, {"offload_model", "offload_optimizer", "fail"})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()

    def where() -> dict[str, Any]:
        state = [v for s in opt.state.values() for v in s.values() if torch.is_tensor(v)]
        return {"param_devices": sorted({str(p.device) for p in model.parameters()}),
                "optimizer_state_devices": sorted({str(v.device) for v in state}),
                "storage": [p.data_ptr() for p in model.parameters()] + [v.data_ptr() for v in state]}

    before = where()
    offload = Offload(model=bool(case.get("offload_model")), optimizer=bool(case.get("offload_optimizer")),
                      optimizer_of=lambda: opt)
    raised, inside = RolloutError("the rollout failed"), {}
    try:
        with offload.around(model):
            inside = where()
            if case.get("fail"):
                raise raised
        came_out = None
    except RolloutError as exc:
        came_out = exc
    after = where()

    def report(seen: dict[str, Any]) -> dict[str, Any]:
        return {**{k: v for k, v in seen.items() if k != "storage"}, "moved": seen["storage"] != before["storage"]}

    out = {"before": report(before), "inside": report(inside), "after": report(after)}
    if case.get("fail"):
        out["the_phase_error_came_out_unchanged"] = came_out is raised
    return out


def _config(case: Mapping[str, Any]) -> dict[str, Any]:
    from coordexp.spec.runners.config import _run_case

    return _run_case({k: v for k, v in case.items() if k != "kind"})


_KINDS = {"request": _request, "slices": _slices, "spread": _spread, "server": _server, "seed": _seed,
          "hf_seed": _hf_seed, "offload": _offload, "config": _config}


def _run_one(case: Any) -> Any:
    if not isinstance(case, Mapping) or case.get("kind") not in _KINDS:
        raise SpecError(f"backend fixture case needs a 'kind' among {sorted(_KINDS)}, got {case!r}")
    try:
        return _KINDS[case["kind"]](case)
    except SpecError:
        raise
    except (CoordexpError, ValueError) as exc:
        return expected_error(exc)


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
