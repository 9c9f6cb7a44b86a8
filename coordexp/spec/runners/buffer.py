"""Runner for ``Transition: buffer``: the rollout buffer's step plan, reuse order and telemetry.

The executor decides every step with ``coordexp.core.order.plan_step``; this runner feeds the same
function and shows, per optimizer step, whether it rolled out (E-step) or reused (M-step), the window it
belongs to and the samples it learns. Inputs, one case or ``{"cases": [...]}``:

- ``{"plan": {"n", "per_step", "m_steps", "steps", "drop_last"?, "resume_at"?, "channels"?, "shuffle"?}}``: ``steps``
  optimizer steps over ``n`` samples; ``resume_at`` k restarts the plan at step k with the data position of
  the uninterrupted run and an empty buffer (what a resume restores); ``channels`` is a string of A/B per
  step (default all B). Shown: per step ``E``/``M`` (``no_window`` for a Channel-A step, which neither rolls
  out nor fills a window), sample indices, window step 0, completed steps, and the buffer telemetry keys.
- ``{"config": {...}}``: a whole config mapping; shows the resolved ``rollout_buffer`` section or the error.
- ``{"run": {"config": {...}, "ops": ["step", "eval", ...]}}``: the real executor on the tiny model (the
  config's model), step by step; the backend is the configured one, wrapped to count its calls. Shown per op:
  rollouts generated, the carry buffer's segment keys afterwards, and whether the window's cached packs are
  bitwise what the E-step packed (a digest of every tensor). Runs with the same input share one execution.
"""

from __future__ import annotations

import functools
import json
import warnings
from pathlib import Path
from typing import Any

import attrs

from coordexp.config import load_config_data, validate
from coordexp.core.order import DataPosition, ReuseWindow, StepPlan, plan_step
from coordexp.core.schedule import Channel
from coordexp.errors import ConfigError, ConfigWarning, SpecError
from coordexp.serde import structure
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "buffer"


@attrs.frozen
class PlanCase:
    n: int
    per_step: int
    m_steps: int
    steps: int
    drop_last: bool = True
    resume_at: int | None = None
    channels: str | None = None
    shuffle: bool = True  # false shows the windows over samples 0..n-1 in order, for reading


def _plans(case: PlanCase, start: int, position: DataPosition, stop: int) -> tuple[list[StepPlan], DataPosition]:
    window, out = ReuseWindow(), []
    for step in range(start, stop):
        scheduled = Channel((case.channels or "B" * case.steps)[step])
        plan = plan_step(step, scheduled=scheduled, position=position, window=window, n=case.n,
                         per_step=case.per_step, seed=0, drop_last=case.drop_last, m_steps=case.m_steps,
                         shuffle=case.shuffle)
        out.append(plan)
        position, window = plan.position, plan.window
    return out, position


def _show(plan: StepPlan) -> dict[str, Any]:
    kind = "M" if plan.reuse else "E" if plan.channel is Channel.B else "no_window"  # Channel A never rolls out
    shown = {"step": plan.step, "kind": kind, "channel": plan.channel.value,
             "samples": list(plan.indices), **plan.buffer_metrics()}
    warning = plan.partial_window_warning()
    return shown if warning is None else {**shown, "partial_window": True, "warning": warning}


def _run_plan(data: dict[str, Any]) -> dict[str, Any]:
    case = structure(data, PlanCase)
    if case.channels is not None and len(case.channels) < case.steps:
        raise SpecError("buffer plan: `channels` needs one letter per step")
    straight, _ = _plans(case, 0, DataPosition(), case.steps)
    out: dict[str, Any] = {
        "steps": [_show(p) for p in straight],
        "rollout_steps": [p.step for p in straight if not p.reuse and p.channel is Channel.B],
        "partial_windows": sum(p.partial_window_warning() is not None for p in straight),
    }
    if case.resume_at is not None:
        k = case.resume_at
        position = straight[k - 1].position if k else DataPosition()
        resumed, _ = _plans(case, k, position, case.steps)
        out["resumed"] = [_show(p) for p in resumed]
    return out


def _run_config(data: dict[str, Any]) -> dict[str, Any]:
    try:
        config = load_config_data(data).config
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConfigWarning)
            validate(config, env={})
    except ConfigError as exc:
        return expected_error(exc)
    buf = config.rollout_matching.rollout_buffer
    return {"rollout_buffer": {"enabled": buf.enabled, "m_steps": buf.m_steps}}


class _Counting:
    """The configured backend, counting the requests it is given (it still generates every one)."""

    def __init__(self, backend: Any) -> None:
        self.backend, self.requests = backend, 0

    def generate(self, requests: Any, *, seed: int | None = None) -> Any:
        self.requests += len(requests)
        return self.backend.generate(requests, seed=seed)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend, name)


def _digest(packs: Any) -> str:
    import hashlib

    import torch

    h = hashlib.sha256()
    for batch in packs:
        for name in sorted(attrs.fields_dict(type(batch))):
            value = getattr(batch, name)
            tensors = value.values() if isinstance(value, dict) else [value]
            for t in tensors:
                if isinstance(t, torch.Tensor):
                    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@functools.lru_cache(maxsize=4)
def _run_ops(data_json: str) -> list[dict[str, Any]]:
    import tempfile

    from coordexp.train import build_executor

    data = json.loads(data_json)
    with tempfile.TemporaryDirectory() as tmp:
        config = load_config_data({**data["config"], "training": {**data["config"]["training"], "output_dir": tmp}}).config
        ex = build_executor(config, Path(tmp) / "run")
        counting = _Counting(ex.rt.backend)
        ex.rt.backend = counting
        out, step = [], 0
        for op in data["ops"]:
            before = counting.requests
            if op == "step":
                state = ex.run_step(step)
                shown = {"op": f"step {step}", "kind": "M" if state.reuse else "E"}
                step += 1
            elif op == "eval":
                ex.evaluate(step)
                shown = {"op": "eval"}
            else:
                raise SpecError(f"buffer run: unknown op {op!r} (step | eval)")
            cached = ex.progress.cached
            shown.update({
                "rollouts_generated": counting.requests - before,
                "carry_buffer": [ref.key for ref in ex.packing.buffer.segments] if ex.packing.buffer else [],
                "cached_window_step0": ex.progress.window.window_step0,
                "cached_packs_digest": _digest(cached.packs) if cached is not None else None,
            })
            out.append(shown)
        ex.tele.close()
        return out


def _run_one(case: dict[str, Any]) -> Any:
    kinds = [k for k in ("plan", "config", "run") if k in case]
    if len(kinds) != 1 or len(case) != 1:
        raise SpecError(f"buffer case needs exactly one of plan / config / run, got {sorted(case)}")
    if kinds[0] == "run":
        return _run_ops(json.dumps(case["run"], sort_keys=True))
    return _run_plan(case["plan"]) if kinds[0] == "plan" else _run_config(case["config"])


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
