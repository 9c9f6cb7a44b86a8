"""Runner for ``channel_a``: the learner's forwards on the real tiny Qwen3-VL, observed through hooks.

Input: one case ``{"case": NAME, "config": ["custom.extra.stage2_ab.n_softctx_iter=2", ...], ...}`` or
``{"cases": [...]}``. ``config`` holds ``--set`` overrides of the stage2_ab_training minimal config; the soft
self-context, geometry and coord-loss records come from ``coordexp.bind`` (the run's own binding). Cases:

- ``forwards`` {prompt_tokens, answer}: a text-only segment (``prompt_tokens`` prompt ids, then ``answer``: a
  list of ``"coord:K"`` / ``"text:S"`` items) packed into one row; per model call: the keyword arguments
  (tensors by shape), the grad mode, and whether ``position_ids`` is the text row over the 3-row M-RoPE.
- ``placeholder_invariance`` {seed}: a tiny image sample; embedding row i is set to the value i and the model's
  coord logits always peak at bin 999; which rows of forward 1's ``inputs_embeds`` (and of the language model's
  input, after the image features are scattered in) equal forward 0's bit for bit.
- ``ce_anchor`` {prompt_tokens, answer, boost}: two runs where the logits favour the right next token by
  ``boost`` on call 1 and a wrong one on call 2, and the reverse; the step loss of each.
- ``packing_metadata`` {prompt_tokens, answer}: the packed row with only ``input_ids``: the learner's refusal.
- ``sliced_logits`` {prompt_tokens, answer}: the model's logits lose their last row: the learner's refusal.
- ``fn_geometry`` {gt: [[x1, y1, x2, y2], ...]}: Channel-B target of an empty rollout (every GT object is FN),
  through the real parse / match / BuildTarget and ``target_segment``; CE weights zeroed, the model always
  predicts bin 999; the step loss and its geometry terms.
- ``trigger_flags`` {gt, pred}: the same rollout finishing with ``finish_reason`` stop (repeat-terminate flag 0)
  and repeat (flag 1) through the same chain; the step losses and whether the segments are identical.
- ``em_detach_gradient`` {prompt_tokens, answer}: which forwards ran with grad and the gradient norm of the loss.

Numbers are rounded to 6 decimals. The model hooks only observe, except where a case says what it forces
(embedding values, coord peaks, a boost, a dropped row): those are the scenario's conditions, applied to the
real model's real outputs. torch is imported inside the functions.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

from coordexp.errors import SpecError
from coordexp.spec.runners import each_case
from coordexp.spec.runners._forwards import _describe

TRANSITION = "channel_a"
AB = "custom.extra.stage2_ab"
_CASE_KEYS = {"case", "config", "prompt_tokens", "answer", "seed", "boost", "gt", "pred"}


def _r(x: Any) -> float:
    return round(float(x), 6)


@functools.lru_cache(maxsize=1)
def _tiny() -> Any:
    from coordexp.data.tiny import build_tiny_qwen3vl

    return build_tiny_qwen3vl(seed=0)


def _fresh() -> Any:
    """A tiny model of its own, for cases that change weights or wrap outputs."""
    from coordexp.data.tiny import build_tiny_qwen3vl

    return build_tiny_qwen3vl(seed=0)


def _records(overrides: Sequence[str]) -> dict[str, Any]:
    from coordexp.bind import bind_coord_loss, bind_geometry_loss, bind_soft_context, minimal_config

    cfg = minimal_config("stage2_ab_training", tuple(overrides))
    return {"coord_cfg": bind_coord_loss(cfg), "geometry": bind_geometry_loss(cfg),
            "soft_context": bind_soft_context(cfg)}


def _coord_ids(tiny: Any) -> Any:
    from coordexp.learn.model import coord_ids_tensor, coord_token_ids

    return coord_ids_tensor(coord_token_ids(tiny.processor.tokenizer))


def _text_segment(tiny: Any, prompt_tokens: int, answer: Sequence[str]) -> Any:
    """prompt ids + answer items (``coord:K`` = ``<|coord_K|>``, ``text:S`` = the ids of S), GT-supervised."""
    import torch

    from coordexp.learn.encode import Encoding, gt_segment
    from coordexp.learn.model import coord_token_ids

    tok = tiny.processor.tokenizer
    coords = coord_token_ids(tok)
    ids = tok.encode("a" * prompt_tokens, add_special_tokens=False)[:prompt_tokens]
    if len(ids) != prompt_tokens:
        raise SpecError(f"channel_a fixture: cannot make {prompt_tokens} prompt tokens")
    prompt_len = len(ids)
    for item in answer:
        kind, _, value = str(item).partition(":")
        if kind == "coord":
            ids.append(coords[int(value)])
        elif kind == "text":
            ids.extend(tok.encode(value, add_special_tokens=False))
        else:
            raise SpecError(f"channel_a fixture: answer items are 'coord:K' or 'text:S', got {item!r}")
    t = torch.tensor(ids, dtype=torch.long)
    enc = Encoding(input_ids=t, mm_token_type_ids=torch.zeros_like(t), pixel_values=None, image_grid_thw=None,
                   prompt_len=prompt_len)
    return gt_segment(enc, coord_id_to_bin={c: k for k, c in enumerate(coords)}, key="case")


@contextlib.contextmanager
def _hooked(module: Any, *, pre: Any = None, post: Any = None) -> Iterator[None]:
    handles = []
    if pre is not None:
        handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
    if post is not None:
        handles.append(module.register_forward_hook(post))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _step_loss(model: Any, batch: Any, records: dict[str, Any], *, backward: bool = False) -> tuple[float, Any]:
    """The learner's step loss of one pack (``forward_loss_sums`` + ``pack_loss`` over ``step_weights``)."""
    import torch

    from coordexp.learn.step_loss import forward_loss_sums, pack_loss, step_weights

    with torch.enable_grad() if backward else torch.no_grad():
        sums = forward_loss_sums(model, batch, coord_ids=_coord_ids(_tiny()), **records)
        loss = pack_loss(sums, *step_weights([batch]))
    if backward:
        model.zero_grad(set_to_none=True)
        loss.backward()
    return float(loss), sums


def _forwards(c: dict[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.learn.packed import pack_segments

    tiny = _tiny()
    batch = pack_segments([_text_segment(tiny, c["prompt_tokens"], c["answer"])], model=tiny.model)
    records = _records(c.get("config", ()))
    calls: list[dict[str, Any]] = []

    def pre(_m: Any, _a: tuple, kwargs: dict[str, Any]) -> None:
        pos = kwargs.get("position_ids")
        packed = batch.inputs["position_ids"]
        calls.append({
            "kwargs": {k: _describe(v) for k, v in sorted(kwargs.items())},
            "grad_enabled": torch.is_grad_enabled(),
            "kept_logits_rows": int(kwargs["logits_to_keep"].sum()),
            "position_ids_are_text_then_mrope": pos is not None and pos.shape[0] == 4 and torch.equal(pos, packed),
        })

    with _hooked(tiny.model, pre=pre):
        loss, _ = _step_loss(tiny.model, batch, records)
    text, mrope = batch.inputs["position_ids"][0], batch.inputs["position_ids"][1:]
    return {
        "n_softctx_iter": records["soft_context"].n_iter,
        "model_calls": len(calls),
        "calls": calls,
        "row_position_ids": {"text": text[0].tolist(), "mrope": mrope[:, 0].tolist()},
        "loss_finite": bool(torch.isfinite(torch.tensor(loss))),
    }


def _peak_at(coord_ids: Any, bin_index: int) -> Any:
    """A forward hook on lm_head: every coord logit -20, bin ``bin_index`` +20 (the model "always peaks")."""

    def post(_m: Any, _a: tuple, out: Any) -> Any:
        out = out.clone()
        out[..., coord_ids] = -20.0
        out[..., coord_ids[bin_index]] = 20.0
        return out

    return post


def _placeholder_invariance(c: dict[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.learn.packed import pack_segments
    from coordexp.learn.tiny_segments import tiny_segments

    tiny = _fresh()
    model, coord_ids = tiny.model, _coord_ids(tiny)
    emb = model.get_input_embeddings().weight
    with torch.no_grad():
        emb.copy_(torch.arange(emb.shape[0], dtype=emb.dtype)[:, None].expand_as(emb))
    seg = tiny_segments(tiny.processor, 1, seed=c.get("seed", 0), max_objects=1)[0]
    batch = pack_segments([seg], model=model)
    fed, lm_in = [], []
    with _hooked(model, pre=lambda _m, _a, kw: fed.append(kw["inputs_embeds"].detach().clone())), \
            _hooked(model.model.language_model, pre=lambda _m, _a, kw: lm_in.append(kw["inputs_embeds"].detach().clone())), \
            _hooked(model.lm_head, post=_peak_at(coord_ids, 999)):
        _step_loss(model, batch, _records(c.get("config", ())))
    coord = torch.zeros(batch.inputs["input_ids"].shape[1], dtype=torch.bool)
    coord[batch.coord_positions] = True
    prompt = torch.zeros_like(coord)
    prompt[: int(seg.labels.ne(-100).nonzero()[0])] = True  # the first CE label is the first answer token
    prompt &= ~coord
    image = batch.inputs["mm_token_type_ids"][0].bool()
    tail = torch.arange(coord.numel()) > int(batch.coord_positions.max())
    same = (fed[1][0] == fed[0][0]).all(-1)
    same_lm = (lm_in[1][0] == lm_in[0][0]).all(-1)
    coord999 = float(emb[coord_ids[999], 0].detach())  # every component of row i is i
    return {
        "forwards": len(fed),
        "rows": {"prompt": int(prompt.sum()), "image_placeholders": int(image.sum()), "coord": int(coord.sum()),
                 "trailing_non_coord": int((tail & ~coord).sum())},
        "prompt_rows_bitwise_equal": bool(same[prompt].all()),
        "image_rows_bitwise_equal_after_the_model_scatters_image_features": bool(same_lm[image].all()),
        "trailing_non_coord_rows_bitwise_equal": bool(same[tail & ~coord].all()),
        "coord_rows_differ": bool((~same[coord]).all()),
        "coord_rows_in_forward_1_are_the_bin_999_embedding": bool(
            torch.allclose(fed[1][0][coord], torch.full_like(fed[1][0][coord], coord999), rtol=1e-4)),
    }


def _boost_labels(batch: Any, boost: float, right_on: int) -> Any:
    """lm_head hook: on call ``right_on`` (1-based) the next token gets +boost, on the other call a wrong one."""
    from coordexp.learn.step_loss import compact

    _keep, labels, _w, _pos = compact(batch)
    target = labels[1:]  # compact row i predicts compact position i + 1
    seen = [0]

    def post(_m: Any, _a: tuple, out: Any) -> Any:
        seen[0] += 1
        out = out.clone()
        rows = min(out.shape[0], target.numel())
        for i in range(rows):
            t = int(target[i])
            if t < 0:
                continue
            out[i, t if seen[0] == right_on else (t + 1) % out.shape[-1]] += boost
        return out

    return post


def _ce_anchor(c: dict[str, Any]) -> dict[str, Any]:
    from coordexp.learn.packed import pack_segments

    tiny = _tiny()
    batch = pack_segments([_text_segment(tiny, c["prompt_tokens"], c["answer"])], model=tiny.model)
    records = _records(c.get("config", ()))
    out = {}
    for name, right_on in (("right_on_call_1", 1), ("right_on_call_2", 2)):
        with _hooked(tiny.model.lm_head, post=_boost_labels(batch, float(c["boost"]), right_on)):
            out[name] = _r(_step_loss(tiny.model, batch, records)[0])
    return {"losses": out, "call_1_right_is_lower": out["right_on_call_1"] < out["right_on_call_2"]}


def _packing_metadata(c: dict[str, Any]) -> dict[str, Any]:
    import attrs

    from coordexp.learn.packed import pack_segments

    tiny = _tiny()
    batch = pack_segments([_text_segment(tiny, c["prompt_tokens"], c["answer"])], model=tiny.model)
    bare = attrs.evolve(batch, inputs={"input_ids": batch.inputs["input_ids"]})
    _step_loss(tiny.model, bare, _records(c.get("config", ())))
    return {"refused": False}


def _sliced_logits(c: dict[str, Any]) -> dict[str, Any]:
    from coordexp.learn.packed import pack_segments

    tiny = _tiny()
    batch = pack_segments([_text_segment(tiny, c["prompt_tokens"], c["answer"])], model=tiny.model)

    def drop_last_row(_m: Any, _a: tuple, out: Any) -> Any:
        out.logits = out.logits[:-1]
        return out

    with _hooked(tiny.model, post=drop_last_row):
        _step_loss(tiny.model, batch, _records(c.get("config", ())))
    return {"refused": False}


def _rollout_segment(gt: Sequence[Sequence[int]], pred: Sequence[Sequence[int]], *, finish: str | None) -> Any:
    """The Channel-B segment of a rollout ``pred`` (bbox bins) against ``gt``, through the real chain."""
    from coordexp.bind import bind_match, bind_prefix_policy, bind_target, minimal_config
    from coordexp.core.coordjson import GTObject, Layout, serialize
    from coordexp.core.keys import GeomType
    from coordexp.core.match import match
    from coordexp.core.parse import parse
    from coordexp.core.parse_records import Rollout
    from coordexp.core.prefix_policy import apply_prefix_policy
    from coordexp.core.target import build_target
    from coordexp.core.target_pipeline import match_shapes
    from coordexp.core.target_records import TargetSample
    from coordexp.core.tokens import TokenContext
    from coordexp.data.tiny import PROMPT
    from coordexp.learn.encode import encode_prompt
    from coordexp.learn.segments import target_segment

    tiny = _tiny()
    cfg = minimal_config("stage2_ab_training")
    ctx = TokenContext.from_hf(tiny.processor.tokenizer, name="tiny")
    objects = [GTObject(i, f"o{i}", GeomType.BBOX, tuple(b)) for i, b in enumerate(gt, 1)]
    preds = [GTObject(i, f"p{i}", GeomType.BBOX, tuple(b)) for i, b in enumerate(pred, 1)]
    ids = (*ctx.encode(serialize(preds, layout=Layout.OBJECT_N)), ctx.im_end_id)
    parsed = parse(Rollout(ids, finish_reason=finish, sample_id="s"), ctx=ctx)
    view = apply_prefix_policy(parsed, ctx=ctx, cfg=bind_prefix_policy(cfg), layout=Layout.OBJECT_N, bbox_only=True,
                               sample_id="s")
    sample = TargetSample("s", objects, Layout.OBJECT_N)
    p, g = match_shapes(view, sample)
    target = build_target(view, match(p, g, cfg=bind_match(cfg)), sample, ctx=ctx, cfg=bind_target(cfg))
    prompt = encode_prompt(tiny.processor, [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}])
    return target_segment(prompt, target, key="s", ctx=ctx), target


def _fn_geometry(c: dict[str, Any]) -> dict[str, Any]:
    import attrs
    import torch

    from coordexp.learn.packed import pack_segments

    seg, target = _rollout_segment(c["gt"], c.get("pred", []), finish="stop")
    seg = attrs.evolve(seg, ce_weights=torch.zeros_like(seg.ce_weights))
    tiny = _fresh()
    batch = pack_segments([seg], model=tiny.model)
    with _hooked(tiny.model.lm_head, post=_peak_at(_coord_ids(tiny), 999)):
        loss, sums = _step_loss(tiny.model, batch, _records(c.get("config", ())))
    boxes = float(sums.box_weight)
    return {
        "fn_objects": len(target.fn_gt_indices),
        "boxes": int(boxes),
        "boxes_are_tail_slots": bool((~seg.coord_is_prefix[seg.box_slots]).all()),
        "ce_weight": _r(sums.ce_weight),
        "smoothl1_mean": _r(float(sums.smoothl1_sum) / boxes) if boxes else 0.0,
        "ciou_mean": _r(float(sums.ciou_sum) / boxes) if boxes else 0.0,
        "loss": _r(loss),
        "loss_positive": loss > 0,
    }


def _trigger_flags(c: dict[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.learn.packed import pack_segments

    tiny = _tiny()
    records = _records(c.get("config", ()))
    out, segments = {}, {}
    for name, finish in (("repeat_terminate_triggered_0", "stop"), ("repeat_terminate_triggered_1", "repeat")):
        seg, _ = _rollout_segment(c["gt"], c["pred"], finish=finish)
        segments[name] = seg
        out[name] = _r(_step_loss(tiny.model, pack_segments([seg], model=tiny.model), records)[0])
    a, b = segments.values()
    same = all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("input_ids", "labels", "ce_weights",
                                                                   "coord_positions", "coord_bins", "box_slots"))
    return {"losses": out, "identical": len(set(out.values())) == 1, "segments_identical": same}


def _em_detach_gradient(c: dict[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.learn.packed import pack_segments

    tiny = _fresh()
    batch = pack_segments([_text_segment(tiny, c["prompt_tokens"], c["answer"])], model=tiny.model)
    records = _records(c.get("config", ()))
    grad_on: list[bool] = []
    with _hooked(tiny.model, pre=lambda _m, _a, _kw: grad_on.append(torch.is_grad_enabled())):
        loss, _ = _step_loss(tiny.model, batch, records, backward=True)
    norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in tiny.model.parameters() if p.grad is not None))
    return {
        "softctx_grad_mode": records["soft_context"].grad_mode,
        "forward_grad_enabled": grad_on,
        "loss": _r(loss),
        "gradient_norm_positive": float(norm) > 0,
    }


_CASES = {
    "forwards": _forwards,
    "placeholder_invariance": _placeholder_invariance,
    "ce_anchor": _ce_anchor,
    "packing_metadata": _packing_metadata,
    "sliced_logits": _sliced_logits,
    "fn_geometry": _fn_geometry,
    "trigger_flags": _trigger_flags,
    "em_detach_gradient": _em_detach_gradient,
}


def _run_case(data: dict[str, Any]) -> Any:
    from coordexp.errors import CoordexpError
    from coordexp.spec.runners import expected_error

    if not isinstance(data, dict) or data.get("case") not in _CASES or not set(data) <= _CASE_KEYS:
        raise SpecError(f"channel_a case: 'case' must be one of {sorted(_CASES)} and keys among {sorted(_CASE_KEYS)}, "
                        f"got {data!r}")
    try:
        return {"case": data["case"], **_CASES[data["case"]](data)}
    except CoordexpError as exc:  # per case, so one refusal does not hide the other cases' results
        return {"case": data["case"], **expected_error(exc)}


def run(data: dict[str, Any]) -> Any:
    return each_case(data, _run_case, transition=TRANSITION)
