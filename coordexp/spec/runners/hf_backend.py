"""Runner for ``Transition: hf_backend``: real rollouts of the tiny Qwen3-VL through ``coordexp.backends.hf``.

Input::

    {"samples": [{"size": 32, "index": 0}, ...],     (synthetic shapes, seed 0 unless "seed" is given; the
                                                      image size changes the prompt length)
     "runs": [{"name": "b1",
               "config": ["custom.extra.rollout_matching.decode_batch_size=1", ...],   (--set style overrides
                                                      of a minimal rollout_matching_sft config; optional)
               "take": [0, 1, 2],                    (which samples, in request order; default all)
               "mismatch": 3,                        (optional: that request's prompt_ids lose their last id,
                                                      so they differ from its encoding)
               "text": true}, ...],                  (optional: also the completion text and whether
                                                      re-encoding that text would give the same ids)
     "compare": [["b1", "b4"], ...]}                 (runs whose completion ids must be compared)

Requests are built as ``coordexp.runtime`` builds them: ``build_messages`` with the built-in prompts over the
decoded images, ``encode_prompt`` with the tiny processor, prompt ids taken from that encoding. Each run gets a
fresh ``HFBackend`` (decoding and stop rules bound from the config) on one tiny model built once per process.

Output: the prompt lengths; per run the prefill of every ``generate`` call as ``[rows, padded prompt width]``
(seen by a forward hook on the model: rows are requests x beams) and per request its sample id, prompt length,
whether the result's prompt ids are the request's own tuple, completion ids and finish reason; or the run's
expected error; then, per compared pair, whether all completion ids are identical.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

from coordexp.errors import CoordexpError, SpecError
from coordexp.spec.runners import expected_error

TRANSITION = "hf_backend"

_KEYS = {"samples", "runs", "compare"}
_RUN_KEYS = {"name", "config", "take", "mismatch", "text"}
_SAMPLE_KEYS = {"size", "index", "seed"}


@functools.lru_cache(maxsize=1)
def _tiny() -> Any:
    """The tiny Qwen3-VL and its token context, built once per process (seed 0, eval mode)."""
    from coordexp.core.tokens import TokenContext
    from coordexp.data.tiny import build_tiny_qwen3vl

    tiny = build_tiny_qwen3vl(seed=0)
    return tiny, TokenContext.from_hf(tiny.processor.tokenizer, name="fixture-bpe")


def _check_keys(data: Any, allowed: set[str], where: str) -> None:
    if not isinstance(data, Mapping) or not set(data) <= allowed:
        raise SpecError(f"hf_backend fixture {where}: keys must be among {sorted(allowed)}, got {data!r}")


def _requests(samples: Sequence[Mapping[str, Any]]) -> list[Any]:
    """One request per synthetic sample, the way ``coordexp.runtime.Runtime.request`` builds it."""
    from coordexp.backends.protocol import RolloutRequest
    from coordexp.data.prompts import build_messages, default_prompts
    from coordexp.data.records import open_images
    from coordexp.data.synthetic import synthetic_samples
    from coordexp.learn.encode import encode_prompt

    tiny, _ = _tiny()
    prompts = default_prompts("sorted")
    out = []
    for i, spec in enumerate(samples):
        _check_keys(spec, _SAMPLE_KEYS, f"samples[{i}]")
        index = int(spec.get("index", 0))
        sample = synthetic_samples(index + 1, int(spec.get("seed", 0)), size=int(spec.get("size", 64)))[index]
        images = open_images(sample)
        enc = encode_prompt(tiny.processor, build_messages(sample, images, prompts))
        out.append(RolloutRequest(sample.sample_id, tuple(enc.input_ids.tolist()), enc, tuple(images)))
    return out


def _prefill_hook(calls: list[list[int]]) -> Any:
    """A forward pre-hook recording ``[rows, width]`` of each prefill (a cached decode step feeds width 1)."""

    def hook(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None and ids.shape[1] > 1:
            calls.append([int(ids.shape[0]), int(ids.shape[1])])

    return hook


def _result(req: Any, res: Any, ctx: Any, text: bool) -> dict[str, Any]:
    ro = res.rollout
    out: dict[str, Any] = {
        "sample_id": ro.sample_id,
        "prompt_len": len(req.prompt_ids),
        "prompt_ids_are_the_request_tuple": ro.prompt_ids is req.prompt_ids,
        "completion_ids": list(ro.completion_ids),
        "finish_reason": ro.finish_reason,
    }
    if text:
        decoded = ctx.text_of(ro.completion_ids)
        out["completion_text"] = decoded
        out["re_encoding_the_text_gives_the_same_ids"] = tuple(ctx.encode(decoded)) == tuple(ro.completion_ids)
    return out


def _run(spec: Mapping[str, Any], requests: list[Any]) -> tuple[dict[str, Any], list[tuple[int, ...]] | None]:
    import attrs

    from coordexp.backends.hf import HFBackend
    from coordexp.bind import bind_decoding, bind_stop_rules, minimal_config

    _check_keys(spec, _RUN_KEYS, "run")
    tiny, ctx = _tiny()
    chosen = [requests[i] for i in spec.get("take", range(len(requests)))]
    if "mismatch" in spec:
        req = chosen[spec["mismatch"]]
        chosen[spec["mismatch"]] = attrs.evolve(req, prompt_ids=req.prompt_ids[:-1])
    calls: list[list[int]] = []
    out: dict[str, Any] = {"name": spec["name"], "generate_calls": calls}
    handle = tiny.model.register_forward_pre_hook(_prefill_hook(calls), with_kwargs=True)
    try:
        cfg = minimal_config("rollout_matching_sft", tuple(spec.get("config", ())))
        backend = HFBackend(model=tiny.model, processor=tiny.processor, ctx=ctx, decoding=bind_decoding(cfg),
                            stop_rules=bind_stop_rules(cfg))
        results = backend.generate(chosen, seed=0)
    except CoordexpError as exc:
        return {**out, **expected_error(exc)}, None
    finally:
        handle.remove()
    out["results"] = [_result(q, r, ctx, bool(spec.get("text"))) for q, r in zip(chosen, results, strict=True)]
    return out, [r.rollout.completion_ids for r in results]


def run(data: Any) -> Any:
    _check_keys(data, _KEYS, "input")
    if not data.get("samples") or not data.get("runs"):
        raise SpecError("hf_backend fixture input: non-empty 'samples' and 'runs' are required")
    requests = _requests(data["samples"])
    runs, completions = [], {}
    for spec in data["runs"]:
        report, ids = _run(spec, requests)
        runs.append(report)
        completions[spec["name"]] = ids
    compared = {}
    for a, b in data.get("compare", ()):
        if completions.get(a) is None or completions.get(b) is None:
            raise SpecError(f"hf_backend fixture compare: runs {a!r} and {b!r} must both exist and succeed")
        compared[f"{a} vs {b}"] = completions[a] == completions[b]
    return {"prompt_lens": [len(r.prompt_ids) for r in requests], "runs": runs, "identical_completions": compared}
