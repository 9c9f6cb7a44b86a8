"""The stability guard's rules: named alarms from the live rollout metrics of the steps that rolled out.

Pure and deterministic: ``observe(state, record, cfg)`` takes the guard's state and one rollout step's
metrics (already reduced over ranks, so every rank reaches the same verdict) and returns the next state
and the alarms raised. The executor decides what an alarm does (``custom.extra.stability_guard.action``).

- Pooling: the last ``window`` rollout steps are folded by the metric registry's own rules (counts
  summed, p90 and duplicates maxed) and the ratios computed as the logged ones are, so the guard judges
  exactly the numbers logging.jsonl shows for such a window.
- A rule *breaches* when its value exceeds its threshold; a rule whose threshold is null, or whose value
  the window could not compute (no predictions, no GT), never breaches.
- An alarm is raised on every evaluation once its rule has breached ``patience`` evaluations in a row;
  one healthy evaluation resets the count.

The state holds only numbers, so ``to_json`` / ``from_json`` carry it through ``trainer_state.json``
and a resumed run raises its alarms on the steps the uninterrupted run would.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import attrs

from coordexp.config.schema_guard import StabilityGuardConfig
from coordexp.telemetry.keys_guard import ALARMS
from coordexp.telemetry.window import MetricWindow

# Base keys a rollout step reports that the rules read (through the window's ratios).
INPUTS: tuple[str, ...] = (
    "rollout/samples", "rollout/parse_truncated", "rollout/gen_new_tokens_p90", "rollout/max_new_tokens",
    "rollout/valid_pred_objects", "rollout/gt_objects", "rollout/parse_dropped_invalid", "rollout/max_desc_duplicates",
    "rollout/invalid_coord_slots",
)


CONFIG_READS = (
    "custom.extra.stability_guard.window",
    "custom.extra.stability_guard.patience",
    "custom.extra.stability_guard.max_gen_p90_frac",
    "custom.extra.stability_guard.max_truncated_rate",
    "custom.extra.stability_guard.max_drop_frac",
    "custom.extra.stability_guard.max_pred_gt_ratio",
    "custom.extra.stability_guard.max_desc_duplicates",
    "custom.extra.stability_guard.max_invalid_coord_slots",
)


@attrs.frozen
class Rule:
    name: str  # the alarm
    metric: str  # the logged key it judges (a ratio of the pooled window, or a max)
    hint: str  # what the seed's post-mortem does about it


RULES: tuple[Rule, ...] = (
    Rule("length_saturation", "rollout/gen_new_tokens_p90_frac",
         "rollouts fill the token budget: set repeat_terminate.max_object_keys (60 for max60 data), keep "
         "max_new_tokens <= 2048, lower b_ratio"),
    Rule("truncation", "rollout/parse_truncated_rate",
         "truncated rollouts train on cut JSON: lower max_new_tokens, set the object cap, lower b_ratio"),
    Rule("invalid_drops", "rollout/parse_obj_drop_frac",
         "malformed objects escape supervision: lower b_ratio (A-hot), raise drop_invalid_struct_ce_multiplier"),
    Rule("over_generation", "rollout/pred_gt_ratio",
         "the model spams objects: set the object cap and the duplicate-object stop rule, lower b_ratio"),
    Rule("duplicate_spam", "rollout/max_desc_duplicates",
         "one label repeated dozens of times: enable repeat_terminate.duplicate_object, lower b_ratio"),
    Rule("coord_slot_contamination", "rollout/invalid_coord_slots_per_sample",
         "non-coord tokens in bbox slots: lower b_ratio (Channel A anchors the coord vocabulary)"),
)
if tuple(r.name for r in RULES) != ALARMS:  # one order for the rules, the metric keys and the docs
    raise ImportError("coordexp.telemetry.guard.RULES and keys_guard.ALARMS disagree")


def thresholds(cfg: StabilityGuardConfig) -> dict[str, float | None]:
    """Alarm name -> its threshold (None: that alarm is off)."""
    return {
        "length_saturation": cfg.max_gen_p90_frac,
        "truncation": cfg.max_truncated_rate,
        "invalid_drops": cfg.max_drop_frac,
        "over_generation": cfg.max_pred_gt_ratio,
        "duplicate_spam": cfg.max_desc_duplicates,
        "coord_slot_contamination": cfg.max_invalid_coord_slots,
    }


@attrs.frozen
class Alarm:
    name: str
    step: int  # the step whose metrics raised it, as logged (optimizer steps done)
    metric: str
    value: float
    threshold: float
    streak: int  # breaching evaluations in a row
    hint: str

    def message(self) -> str:
        return (f"stability alarm `{self.name}` at step {self.step}: {self.metric} = {self.value:.4g} > "
                f"{self.threshold:g} for {self.streak} rollout evaluation(s) in a row; {self.hint}")


@attrs.frozen
class GuardState:
    recent: tuple[Mapping[str, float], ...] = ()  # the last ``window`` rollout steps' INPUTS, oldest first
    streaks: Mapping[str, int] = attrs.Factory(dict)  # rule -> breaching evaluations in a row

    def to_json(self) -> dict:
        return {"recent": [dict(r) for r in self.recent], "streaks": dict(self.streaks)}

    @classmethod
    def from_json(cls, data: Mapping | None) -> GuardState:
        if not data:
            return cls()
        return cls(tuple(dict(r) for r in data["recent"]), dict(data["streaks"]))


def rollout_inputs(metrics: Mapping[str, float]) -> dict[str, float] | None:
    """The guard's inputs of one step's metrics; None when the step generated no rollout."""
    if not metrics.get("rollout/generated_sequences") or not metrics.get("rollout/samples"):
        return None
    return {k: float(metrics[k]) for k in INPUTS if k in metrics}


def pooled(recent: Sequence[Mapping[str, float]], *, variant: str) -> dict[str, float]:
    """The logged record of a window made of ``recent`` (the registry's rules, single process)."""
    window = MetricWindow(variant=variant)
    for i, step_metrics in enumerate(recent):
        window.add(step_metrics, i)
    return window.reduce()


def breaches(record: Mapping[str, float], cfg: StabilityGuardConfig) -> dict[str, tuple[float, float]]:
    """Rule name -> (value, threshold) for every rule the pooled ``record`` breaches."""
    out, limits = {}, thresholds(cfg)
    for rule in RULES:
        threshold = limits[rule.name]
        value = record.get(rule.metric)
        if threshold is not None and value is not None and value > threshold:
            out[rule.name] = (float(value), float(threshold))
    return out


def observe(state: GuardState, step: int, inputs: Mapping[str, float], cfg: StabilityGuardConfig, *,
            variant: str) -> tuple[GuardState, tuple[Alarm, ...]]:
    """Fold one rollout step in; the alarms it raises (rules in ``RULES`` order)."""
    recent = (*state.recent, dict(inputs))[-cfg.window:]
    found = breaches(pooled(recent, variant=variant), cfg)
    streaks = {name: state.streaks.get(name, 0) + 1 for name in found}
    alarms = tuple(
        Alarm(rule.name, step, rule.metric, *found[rule.name], streaks[rule.name], rule.hint)
        for rule in RULES if rule.name in found and streaks[rule.name] >= cfg.patience
    )
    return GuardState(recent, streaks), alarms


def alarm_metrics(alarms: Sequence[Alarm]) -> dict[str, float]:
    return {f"guard/alarm/{a.name}": 1.0 for a in alarms}
