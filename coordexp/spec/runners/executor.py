"""Runner for ``Transition: executor``: the step budget, the machine's path and the step's loss normalisation.

The executor's step is one machine run per optimizer step (``coordexp.executor``); what a scenario can
check without a model is computed here with the executor's own pieces:

- ``{"budget": {"config": {...}, "world": W, "steps": N}}``: the config is loaded and validated as a run
  would be (with ``WORLD_SIZE=W``), bound, and planned with ``core.order.plan_step``; shown per step: the
  channel, each rank's share of the samples (``core.order.rank_share``), rollouts per step, optimizer
  updates, and the states the machine visits for that step (the real ``StepMachine`` table).
- ``{"config": {...}}``: a mapping handed over in place of a typed config; it is structured and validated
  like any config file, so a bad value is refused before any step.
- ``{"ce": {"packs": [{"tokens": T, "mean_ce": m, "segments": s}, ...]}}``: the step CE that the learner's
  normalisation (``learn.learner.step_weights`` contract, ``pack_loss``) gives for packs with these totals.
- ``{"forwards": {"config": {...}, "steps": N}}``: N steps of the real executor on the config's tiny model; what
  the model's ``generate`` and each learner forward received, per step (``coordexp.spec.runners._forwards``).
"""

from __future__ import annotations

import warnings
from typing import Any

import attrs

from coordexp.bind import bind
from coordexp.config import load_config_data, validate
from coordexp.core.order import DataPosition, ReuseWindow, plan_step, rank_share
from coordexp.core.schedule import Channel, channel_for_step
from coordexp.errors import ConfigError, ConfigWarning, SpecError
from coordexp.machine import StepMachine
from coordexp.serde import structure
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "executor"


@attrs.frozen
class BudgetCase:
    config: dict[str, Any]
    world: int = 1
    steps: int = 1


@attrs.frozen
class PackTotals:
    tokens: int  # CE-weighted tokens of the pack
    mean_ce: float  # nats per token
    segments: int


class _PathOnly:
    """The machine's guards for a training step of a given channel; stages only record their names."""

    def __init__(self, channel: Channel, reuse: bool) -> None:
        self.channel, self.reuse = channel, reuse

    def reuses_buffer(self) -> bool:
        return self.reuse

    def is_channel_a(self) -> bool:
        return self.channel is Channel.A

    def is_eval(self) -> bool:
        return False

    def has_segments(self) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return lambda: None


def _load(mapping: dict[str, Any], env: dict[str, str]) -> Any:
    loaded = load_config_data(mapping, source="<fixture>")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigWarning)
        validate(loaded.config, env=env, display=loaded.display, source="<fixture>")
    return loaded.config


def _budget(data: dict[str, Any]) -> dict[str, Any]:
    case = structure(data, BudgetCase)
    env = {"WORLD_SIZE": str(case.world)}
    config = _load(case.config, env)
    bound = bind(config, env=env)
    d, t = bound.derived, config.training
    buf = bound.rollout_buffer
    position, window, steps = DataPosition(), ReuseWindow(), []
    n = max(d.samples_per_step * case.steps, 1)  # a data set just large enough for the shown steps
    for step in range(case.steps):
        scheduled = Channel.B if bound.schedule is None else channel_for_step(step, schedule=bound.schedule)
        plan = plan_step(step, scheduled=scheduled, position=position, window=window, n=n,
                         per_step=d.samples_per_step, seed=t.seed, drop_last=t.dataloader_drop_last,
                         m_steps=buf.reuse_steps)
        shares = [rank_share(plan.indices, rank=r, world=case.world) for r in range(case.world)]
        trace = StepMachine(_PathOnly(plan.channel, plan.reuse)).run_train_step()
        steps.append({
            "step": step, "channel": plan.channel.value,
            "samples_per_rank": [len(s) for s in shares],
            "shares_disjoint": len({i for s in shares for i in s}) == sum(len(s) for s in shares),
            "rollouts": 0 if plan.channel is Channel.A or plan.reuse else len(plan.indices),
            "optimizer_updates": trace.count("Learn"), "trace": trace,
        })
    return {"world_size": d.world_size, "gradient_accumulation_steps": d.gradient_accumulation_steps,
            "samples_per_step": d.samples_per_step, "packing_mode": d.packing_mode, "steps": steps}


def _ce(data: dict[str, Any]) -> dict[str, Any]:
    import torch

    from coordexp.learn.learner import LossSums, pack_loss

    packs = [structure(p, PackTotals) for p in data["packs"]]
    w_ce = float(sum(p.tokens for p in packs))
    zero = torch.zeros((), dtype=torch.float64)
    total = 0.0
    for p in packs:
        ce_sum = torch.tensor(p.tokens * p.mean_ce, dtype=torch.float64)
        sums = LossSums(ce_sum, torch.tensor(float(p.tokens)), zero, zero, zero, zero, zero, zero)
        total += float(pack_loss(sums, w_ce, 0.0))
    return {"step_ce": round(total, 9), "segment_weighted_ce": round(
        sum(p.mean_ce * p.segments for p in packs) / sum(p.segments for p in packs), 9)}


def _run_one(case: dict[str, Any]) -> Any:
    kinds = [k for k in ("budget", "config", "ce", "forwards") if k in case]
    if len(kinds) != 1 or len(case) != 1:
        raise SpecError(f"executor case needs exactly one of budget / config / ce / forwards, got {sorted(case)}")
    kind = kinds[0]
    if kind == "forwards":
        from coordexp.spec.runners._forwards import step_forwards

        return step_forwards(**case["forwards"])
    if kind == "budget":
        return _budget(case["budget"])
    if kind == "config":
        try:
            _load(case["config"], {})
        except ConfigError as exc:
            return expected_error(exc)
        return {"accepted": True}
    return _ce(case["ce"])


def run(data: Any) -> Any:
    return each_case(data, _run_one, transition=TRANSITION)
