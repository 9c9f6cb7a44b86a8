"""MetricWindow: accumulate step metrics over one logging window, reduce over ranks, finalize once.

Why: the legacy trainers buffered metrics per optimizer step and popped only the step that was logged,
so with ``logging_steps > 1`` every other step was never reported and never freed (rollout §15 W5). Here
every step of the window is folded into a small state by each key's registered rule, the state is
summed / maxed over DDP ranks in one fixed-shape all-reduce (no key-name gathering: the registry fixes
the layout), and ratios are computed last from the reduced numerators and denominators.

Flow per logging window::

    window.add(step_metrics, step)              # every optimizer step (or every eval pass)
    state = reduce_across_ranks(window.drain())  # drain() empties the window
    record = finalize(state)                     # {key: value}, registry order, helpers dropped

``window.reduce()`` is ``finalize(drain())`` for one process; ``reduce_states`` reduces several ranks' states
held in one process with the same code.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import attrs

from coordexp.errors import TelemetryError
from coordexp.telemetry.keys import REGISTRY, Across, Agg, Key, Mode, Registry

Slot = tuple[float, float, int]  # (value, weight, steps present); weight divides mean-like values


@attrs.frozen
class WindowState:
    """One window's folded values on one rank (or, after ``reduce_across_ranks``, on all ranks)."""

    mode: Mode
    variant: str
    n_steps: int
    first_step: int | None
    last_step: int | None
    values: Mapping[str, Slot]


def _number(name: str, value: object, step: int) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TelemetryError(f"metric {name!r} at step {step}: value must be a number, got {value!r}")
    return float(value)


def _fold(k: Key, slot: Slot | None, v: float) -> Slot:
    """One step's value folded into the key's slot by its window rule."""
    if slot is None:
        return (v, 1.0, 1)
    value, weight, present = slot
    if k.agg in (Agg.SUM, Agg.MEAN, Agg.SPARSE):
        return (value + v, weight + 1.0, present + 1)
    if k.agg is Agg.MAX:
        return (max(value, v), 1.0, present + 1)
    if k.agg is Agg.MIN:
        return (min(value, v), 1.0, present + 1)
    return (v, 1.0, present + 1)  # LAST


class MetricWindow:
    """Folds the metrics of successive optimizer steps (train) or eval batches (eval)."""

    def __init__(self, *, variant: str, mode: Mode = Mode.TRAIN, registry: Registry = REGISTRY) -> None:
        self.variant, self.mode, self.registry = variant, Mode(mode), registry
        self._clear()

    def _clear(self) -> None:
        self._slots: dict[str, Slot] = {}
        self._steps = 0
        self._first: int | None = None
        self._last: int | None = None

    @property
    def pending_steps(self) -> int:
        """Steps added since the last drain (0 right after a log)."""
        return self._steps

    def check(self, name: str) -> Key:
        """The registered base key ``name`` if this window may take it, else a TelemetryError naming it."""
        k = self.registry.get(name)
        if k.derived:
            raise TelemetryError(
                f"metric {name!r} is derived ({k.formula()}); emit its inputs, the window computes it"
            )
        if k.mode is not self.mode or self.variant not in k.variants:
            raise TelemetryError(
                f"metric {name!r} belongs to mode {k.mode.value} / variants {sorted(k.variants)}, "
                f"not to this {self.mode.value} window of {self.variant}"
            )
        return k

    def add(self, step_metrics: Mapping[str, float], step: int) -> None:
        """Fold one step's metrics in; steps must increase strictly (a step is never counted twice)."""
        if self._last is not None and step <= self._last:
            raise TelemetryError(f"MetricWindow.add: step {step} after step {self._last}; each step is added once")
        checked = [(self.check(name), _number(name, v, step)) for name, v in step_metrics.items()]
        for k, v in checked:
            self._slots[k.name] = _fold(k, self._slots.get(k.name), v)
        self._steps += 1
        self._first = step if self._first is None else self._first
        self._last = step

    def drain(self) -> WindowState:
        """The window's state; the window is empty afterwards. Dense means must cover every step."""
        for name, (_, _, present) in self._slots.items():
            k = self.registry.keys[name]
            if k.agg is Agg.MEAN and present != self._steps:
                raise TelemetryError(
                    f"metric {name!r} is a per-step mean over the whole window but was reported on {present} of "
                    f"{self._steps} steps ({self._first}..{self._last}); emit it every step or register it as sparse"
                )
        state = WindowState(self.mode, self.variant, self._steps, self._first, self._last, dict(self._slots))
        self._clear()
        return state

    def reduce(self) -> dict[str, float]:
        """``finalize(self.drain())``: the record of this window for a single process."""
        return finalize(self.drain(), registry=self.registry)


def _base_value(k: Key, slot: Slot) -> float:
    value, weight, _ = slot
    if k.agg in (Agg.MEAN, Agg.SPARSE) or (k.agg is Agg.LAST and k.across is Across.MEAN):
        return value / weight
    return value


def _derived_value(k: Key, base: Mapping[str, float], registry: Registry) -> float | None:
    """None (left out) unless its counts were reported: every plain input, or any member of a family.

    Family members (``rollout/parse_dropped/<reason>``) are reported only when non-zero, so a missing one
    counts as 0; a plain count that is missing means nobody measured it, and the ratio would be made up.
    """
    names = k.inputs()
    plain = [n for n in names if registry.keys[n].family is None]
    if (plain and not all(n in base for n in plain)) or not any(n in base for n in names):
        return None
    num = sum(c * base.get(name, 0.0) for c, name in k.num)
    if not k.den:
        return num
    den = sum(c * base.get(name, 0.0) for c, name in k.den)
    if den == 0:
        return k.if_zero
    return num / den


def finalize(state: WindowState, *, registry: Registry = REGISTRY) -> dict[str, float]:
    """The logged record: base values by rule, derived ratios from them, helpers left out, registry order."""
    base = {name: _base_value(registry.keys[name], slot) for name, slot in state.values.items()}
    out: dict[str, float] = {}
    for k in registry.for_mode(state.mode):
        if state.variant not in k.variants or k.internal:
            continue
        value = _derived_value(k, base, registry) if k.derived else base.get(k.name)
        if value is not None:
            out[k.name] = value
    return out


AllReduce = Callable[[list[float], str], list[float]]  # (values, "sum" | "max" | "min") -> reduced values


def reduce_across_ranks(
    state: WindowState, *, all_reduce: AllReduce | None = None, registry: Registry = REGISTRY
) -> WindowState:
    """Combine every rank's window state (a no-op without an initialised torch.distributed group).

    Three all-reduces (sum, max, min) of float64 vectors laid out by the registry's base keys of the
    window's mode, so every rank sends the same shape whichever keys it saw. ``all_reduce`` replaces
    the torch collective (tests); by default torch is imported here, lazily.
    """
    if all_reduce is None:
        all_reduce = _torch_all_reduce()
        if all_reduce is None:
            return state
    keys = [k for k in registry.for_mode(state.mode) if not k.derived]
    sums, maxes, mins = _vectors(state, keys)
    sums, maxes, mins = all_reduce(sums, "sum"), all_reduce(maxes, "max"), all_reduce(mins, "min")
    n = len(keys)
    values: dict[str, Slot] = {}
    for i, k in enumerate(keys):
        present = int(round(sums[2 * n + i]))
        if present == 0:
            continue
        value = {Across.MAX: maxes[i], Across.MIN: mins[i]}.get(k.across, sums[i])
        values[k.name] = (value, sums[n + i], present)
    first, last = mins[n], maxes[n]
    return WindowState(state.mode, state.variant, int(round(sums[3 * n])),
                       None if math.isinf(first) else int(first), None if math.isinf(last) else int(last), values)


def _vectors(state: WindowState, keys: Sequence[Key]) -> tuple[list[float], list[float], list[float]]:
    n = len(keys)
    sums = [0.0] * (3 * n + 1)
    maxes, mins = [-math.inf] * (n + 1), [math.inf] * (n + 1)
    for i, k in enumerate(keys):
        slot = state.values.get(k.name)
        if slot is None:
            continue
        value, weight, present = slot
        if k.across is Across.MAX:
            maxes[i] = value
        elif k.across is Across.MIN:
            mins[i] = value
        else:
            sums[i] = value
        sums[n + i], sums[2 * n + i] = weight, float(present)
    sums[3 * n] = float(state.n_steps)
    if state.last_step is not None:
        maxes[n], mins[n] = float(state.last_step), float(state.first_step)
    return sums, maxes, mins


def reduce_states(states: Sequence[WindowState], *, registry: Registry = REGISTRY) -> WindowState:
    """``reduce_across_ranks`` over rank states held in one process (tests, scenario runners).

    It runs the same vector code; only the transport differs: each rank's vectors are reduced here.
    """
    if not states or len({(s.mode, s.variant) for s in states}) != 1:
        raise TelemetryError("reduce_states needs at least one state, all of one mode and variant")
    keys = [k for k in registry.for_mode(states[0].mode) if not k.derived]
    per_rank = [_vectors(s, keys) for s in states]
    ops = {"sum": (0, sum), "max": (1, max), "min": (2, min)}

    def all_reduce(_local: list[float], op: str) -> list[float]:
        slot, fn = ops[op]
        return [fn(col) for col in zip(*(v[slot] for v in per_rank))]

    return reduce_across_ranks(states[0], all_reduce=all_reduce, registry=registry)


def _torch_all_reduce() -> AllReduce | None:
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return None
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}

    def reduce(values: list[float], op: str) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=ops[op])
        return t.cpu().tolist()

    return reduce


def merge_metrics(*parts: Mapping[str, float], registry: Registry = REGISTRY) -> dict[str, float]:
    """One step's metrics from its parts (learner, rollout, packing, ...): every key kept, later parts win.

    Keys are checked against the registry here so that a typo fails where it is written.
    """
    out: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            if registry.get(name).derived:
                raise TelemetryError(f"metric {name!r} is derived; a step part may not set it")
            out[name] = value
    return out
