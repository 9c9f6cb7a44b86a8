"""What the model is handed, observed on the real tiny Qwen3-VL (shared by the ``loss`` and ``executor`` runners).

Two observations, both on real code with the model's own hooks (nothing stands in for a part):

- ``learner_inputs``: tiny segments packed into one row and padded into a batch, each run through
  ``learn.learner.forward_loss_sums``; a forward pre-hook records the keyword arguments the model receives,
  and a forward hook whether the model computed a loss of its own. Then each helper key of the legacy
  collator is put into a batch's ``inputs``, which ``TrainBatch`` refuses.
- ``step_forwards``: optimizer steps of the real executor (config's model, backend and packing); the model's
  ``generate`` is observed by a pass-through wrapper (it calls the real method) and every learner forward by
  a pre-hook, so the report says, per step, what generation got (one row per request, under an attention
  mask) and what the learner got (packed rows), in the order the machine ran them.

The model must be the bare transformers model (``tuner.train_type: full``): PEFT calls the wrapped
model's ``forward`` directly, past its hooks. torch and transformers are imported inside the functions.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from coordexp.errors import SpecError

# The keys the legacy trainer stripped from a collated batch before its forward (reference rollout 7).
LEGACY_HELPER_KEYS = (
    "labels", "compute_loss_func", "loss_scale", "text_position_ids", "channel", "logits_to_keep",
    "past_key_values", "_rollout_matching_meta", "_rollout_matching_batch_metrics",
)


def _describe(value: Any) -> Any:
    """A keyword argument as the report shows it: tensors by shape and dtype, scalars as themselves."""
    import torch

    if isinstance(value, torch.Tensor):
        return {"shape": list(value.shape), "dtype": str(value.dtype).removeprefix("torch.")}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return type(value).__name__


@contextlib.contextmanager
def _recording(model: Any, calls: list[dict[str, Any]]) -> Iterator[None]:
    """Record every forward's keyword arguments and whether the model returned a loss of its own."""

    def before(_module: Any, args: tuple, kwargs: dict[str, Any]) -> None:
        if args:
            raise SpecError(f"the model got {len(args)} positional argument(s); coordexp passes keywords only")
        calls.append({"kwargs": {k: _describe(v) for k, v in sorted(kwargs.items())}})

    def after(_module: Any, _args: tuple, _kwargs: dict[str, Any], out: Any) -> None:
        calls[-1]["model_loss"] = getattr(out, "loss", None) is not None

    handles = [model.register_forward_pre_hook(before, with_kwargs=True),
               model.register_forward_hook(after, with_kwargs=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def learner_inputs(*, segments: int, seed: int, prefix_len: int) -> dict[str, Any]:
    """The ``forward_inputs`` case of the ``loss`` runner (see the module docstring)."""
    import attrs
    import torch

    from coordexp.data.tiny import build_tiny_qwen3vl
    from coordexp.errors import PackingError
    from coordexp.learn.learner import forward_loss_sums
    from coordexp.learn.losses import CoordLossConfig
    from coordexp.learn.model import coord_token_ids
    from coordexp.learn.packed import MODEL_INPUT_KEYS, pack_segments, pad_segments
    from coordexp.learn.tiny_segments import tiny_segments

    tiny = build_tiny_qwen3vl(seed=0)
    tok = tiny.processor.tokenizer
    segs = tiny_segments(tiny.processor, segments, seed=seed, prefix_len=prefix_len)
    coord_ids = torch.tensor(coord_token_ids(tok))
    cfg = CoordLossConfig(sigma=2.0, truncate=16.0, temperature=1.0, soft_ce_weight=1.0, w1_weight=1.0,
                          gate_weight=1.0)
    batches = {"packed": pack_segments(segs, model=tiny.model), "padded": pad_segments(segs, pad_token_id=tok.pad_token_id)}
    layouts = {}
    for name, batch in batches.items():
        calls: list[dict[str, Any]] = []
        with _recording(tiny.model, calls), torch.no_grad():
            sums = forward_loss_sums(tiny.model, batch, coord_ids=coord_ids, coord_cfg=cfg)
        got = set(calls[0]["kwargs"])
        layouts[name] = {
            "forwards": len(calls),
            "model_kwargs": calls[0]["kwargs"],
            "batch_inputs": sorted(batch.inputs),
            "added_by_learner": sorted(got - set(batch.inputs)),
            # logits_to_keep is the learner's own row mask (the rows a loss reads), not a collator helper
            "helper_keys_received": sorted(got & set(LEGACY_HELPER_KEYS) - {"logits_to_keep"}),
            "model_computed_a_loss": calls[0]["model_loss"],
            "losses_finite": bool(torch.isfinite(torch.stack(list(sums))).all()),
        }
    refused, message = {}, ""
    base = batches["packed"]
    for key in LEGACY_HELPER_KEYS:
        try:
            attrs.evolve(base, inputs={**base.inputs, key: torch.zeros(1)})
        except PackingError as exc:
            refused[key] = {"refused": type(exc).__name__, "names_the_key": repr(key) in str(exc)}
            message = message or str(exc)
        else:
            refused[key] = {"accepted": True}
    return {"allowed_inputs": sorted(MODEL_INPUT_KEYS), "layouts": layouts, "helper_key_in_inputs": refused,
            "first_refusal": message}


# ------------------------------------------------------------------------------------------------
# executor steps
# ------------------------------------------------------------------------------------------------


class _Phase:
    """Which side of the step a forward belongs to: inside the backend's ``generate`` or not."""

    def __init__(self) -> None:
        self.generating = False
        self.generate_calls: list[dict[str, Any]] = []
        self.learn_forwards: list[dict[str, Any]] = []
        self.requests: list[tuple[int, ...]] = []  # prompt ids of each request handed to the backend


def _rows(input_ids: Any, mask: Any) -> list[tuple[int, ...]]:
    return [tuple(ids[m.bool()].tolist()) for ids, m in zip(input_ids, mask, strict=True)]


def _watch_generate(model: Any, phase: _Phase) -> Any:
    real = model.generate

    def generate(*args: Any, **kwargs: Any) -> Any:
        ids, mask = kwargs.get("input_ids"), kwargs.get("attention_mask")
        if ids is None or args:
            raise SpecError("the backend called generate without keyword input_ids")
        phase.generate_calls.append({
            "rows": int(ids.shape[0]),
            "attention_mask": mask is not None,
            "position_ids": "position_ids" in kwargs,
            "width": int(ids.shape[1]),
            "prompt_lengths": mask.sum(dim=1).tolist() if mask is not None else None,
            "mask_ones_right_aligned": mask is not None and bool((mask.cummax(dim=1).values == mask).all()),
            "row_prompts": _rows(ids, mask) if mask is not None else [],
        })
        phase.generating = True
        try:
            return real(*args, **kwargs)
        finally:
            phase.generating = False

    model.generate = generate
    return real


def _learn_hook(phase: _Phase) -> Any:
    def before(_module: Any, _args: tuple, kwargs: dict[str, Any]) -> None:
        if phase.generating:
            return
        ids, pos = kwargs["input_ids"], kwargs.get("position_ids")
        starts = int((pos[0, 0] == 0).sum()) if pos is not None and pos.dim() == 3 else None
        phase.learn_forwards.append({
            "rows": int(ids.shape[0]), "length": int(ids.shape[1]),
            "attention_mask": "attention_mask" in kwargs,
            "segments_in_row": starts,
        })

    return before


class _Backend:
    """The configured backend, noting the prompt ids of each request (it still generates every one)."""

    def __init__(self, backend: Any, phase: _Phase) -> None:
        self.backend, self.phase = backend, phase

    def generate(self, requests: Sequence[Any], *, seed: int | None = None) -> Any:
        self.phase.requests.extend(tuple(r.prompt_ids) for r in requests)
        return self.backend.generate(requests, seed=seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def step_forwards(*, config: dict[str, Any], steps: int) -> dict[str, Any]:
    """The ``forwards`` case of the ``executor`` runner (see the module docstring)."""
    from coordexp.config import load_config_data
    from coordexp.train import build_executor

    with tempfile.TemporaryDirectory() as tmp:
        training = {**config.get("training", {}), "output_dir": tmp}
        ex = build_executor(load_config_data({**config, "training": training}).config, Path(tmp) / "run")
        rt = ex.rt
        if rt.learner.model is not rt.model:
            raise SpecError("executor forwards needs the bare model (tuner.train_type: full, one process)")
        phase = _Phase()
        rt.backend = _Backend(rt.backend, phase)
        real_generate = _watch_generate(rt.model, phase)
        handle = rt.model.register_forward_pre_hook(_learn_hook(phase), with_kwargs=True)
        try:
            out = [_one_step(ex, phase, step) for step in range(steps)]
        finally:
            handle.remove()
            rt.model.generate = real_generate
            ex.tele.close()
    return {"packing_mode": rt.derived.packing_mode, "steps": out}


def _one_step(ex: Any, phase: _Phase, step: int) -> dict[str, Any]:
    phase.generate_calls.clear()
    phase.learn_forwards.clear()
    phase.requests.clear()
    state = ex.run_step(step)
    rows = [p for call in phase.generate_calls for p in call.pop("row_prompts")]
    # completion lengths follow greedy decoding of a random tiny model, so lengths are shown as relations
    forwards = []
    for f, pack in zip(phase.learn_forwards, state.packs, strict=True):
        length = f.pop("length")
        forwards.append({**f, "length_is_its_pack_total": length == sum(pack.segment_lengths)})
    return {
        "trace": list(state.trace),
        "rollout_requests": len(phase.requests),
        "generate_calls": phase.generate_calls[:],
        "generate_rows_are_the_requests_in_order": rows == phase.requests,
        "learn_forwards": forwards,
        "packs": [{"segments": p.n_segments} for p in state.packs],
    }
