"""The model of the metric key registry (``coordexp.telemetry.keys``): keys, templates, rules, parity.

Why one registry: the legacy trainers classified keys by name patterns in two reducers that disagreed,
documented keys nobody emitted and emitted keys nobody documented. Here a key exists only if it is
registered; ``MetricWindow`` refuses anything else, the metrics reference (``docs/metrics.md``) is
generated from this table, and ``check_parity`` compares what a run logged with what it should log.

A *base* key is emitted by a part of the trainer and aggregated over a logging window by its ``agg``
rule, then over DDP ranks by its ``across`` rule. A *derived* key (``agg`` ratio) is never emitted: the
window computes it from summed numerators and denominators after both reductions, which is how every
ratio stays a ratio of sums (never a mean of ratios). An *internal* key is a helper numerator or
denominator: aggregated like any base key, never logged. Keys with a closed family of suffixes
(``rollout/stop_rule/<rule>``) are registered once as a template and expanded here.

The tables live in ``keys_step``, ``keys_rollout`` and ``keys_eval``; ``keys`` assembles them.
"""

from __future__ import annotations

import difflib
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import get_args

import attrs

from coordexp.config.schema_root import TrainerVariant
from coordexp.errors import TelemetryError

VARIANTS: tuple[str, ...] = get_args(TrainerVariant)
RM, AB = "rollout_matching_sft", "stage2_ab_training"
BOTH = frozenset(VARIANTS)
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*(/[A-Za-z0-9_]+)*$")


class Agg(enum.StrEnum):
    """How a key aggregates over the optimizer steps of one logging window."""

    SUM = "sum"  # counters
    MEAN = "mean"  # mean over every step of the window; each step must report it
    SPARSE = "sparse"  # mean over the steps that reported it
    MAX = "max"
    MIN = "min"
    LAST = "last"  # the value of the window's last step that reported it
    RATIO = "ratio"  # derived: sum(num) / sum(den), after the rank reduction


class Across(enum.StrEnum):
    """How a base key's window value combines over DDP ranks."""

    SUM = "sum"
    MEAN = "mean"  # for mean/sparse keys: total over total steps of every rank
    MAX = "max"
    MIN = "min"


class Mode(enum.StrEnum):
    TRAIN = "train"
    EVAL = "eval"


class Emitter(enum.StrEnum):
    """The part of coordexp that puts a base key into a step's metrics."""

    LEARNER = "learner"  # coordexp.learn.learner.StepStats.metrics
    ROLLOUT = "rollout_metrics"  # coordexp.eval.detection.rollout_metrics
    EVALUATOR = "eval_metrics"  # coordexp.eval.detection.eval_metrics
    PACKING = "pack_metrics"  # coordexp.telemetry.step.pack_metrics
    SCHEDULE = "schedule_metrics"  # coordexp.telemetry.step.schedule_metrics
    EXECUTOR = "executor"  # step bookkeeping, timings, dropped samples, decoding gauges, buffer
    BACKEND = "backend"  # rollout backend metadata (vLLM server seeds)
    DESC_MONITOR = "desc_monitor"
    TELEMETRY = "telemetry"  # the log sinks and diagnostics guard themselves
    DERIVED = "window"  # computed by MetricWindow from num / den


DEFAULT_ACROSS = {
    Agg.SUM: Across.SUM,
    Agg.MEAN: Across.MEAN,
    Agg.SPARSE: Across.MEAN,
    Agg.MAX: Across.MAX,
    Agg.MIN: Across.MIN,
    Agg.LAST: Across.MEAN,
}
_ALLOWED_ACROSS = {
    Agg.SUM: {Across.SUM, Across.MAX},
    Agg.MEAN: {Across.MEAN},
    Agg.SPARSE: {Across.MEAN},
    Agg.MAX: {Across.MAX},
    Agg.MIN: {Across.MIN},
    Agg.LAST: {Across.MEAN, Across.SUM, Across.MAX},
}

Term = tuple[float, str]  # (coefficient, key name)


def _terms(value: Iterable[object]) -> tuple[Term, ...]:
    out = []
    for item in value:
        coef, name = (1.0, item) if isinstance(item, str) else item
        out.append((float(coef), str(name)))
    return tuple(out)


@attrs.frozen
class Key:
    """One registered metric key."""

    name: str
    agg: Agg
    unit: str
    doc: str
    emitter: Emitter
    across: Across | None = None  # None for derived keys; filled from the agg rule otherwise
    num: tuple[Term, ...] = attrs.field(default=(), converter=_terms)
    den: tuple[Term, ...] = attrs.field(default=(), converter=_terms)  # empty: the value is num itself
    if_zero: float | None = 0.0  # derived value when den sums to 0; None leaves the key out
    variants: frozenset[str] = BOTH
    mode: Mode = Mode.TRAIN
    requires: frozenset[str] = frozenset()  # run features that must be on for the key to be expected
    optional: bool = False  # may be absent from a run even with its requirements met (doc says when)
    internal: bool = False  # a helper numerator / denominator, never logged
    family: str | None = None  # the template pattern it was expanded from

    @property
    def derived(self) -> bool:
        return self.agg is Agg.RATIO

    def inputs(self) -> tuple[str, ...]:
        return tuple(name for _, name in (*self.num, *self.den))

    def formula(self) -> str:
        """``num`` or ``(num) / (den)`` as text, for errors and the metrics reference."""

        def side(terms: tuple[Term, ...]) -> str:
            return " + ".join(name if c == 1 else f"{c:g}*{name}" for c, name in terms)

        return side(self.num) if not self.den else f"({side(self.num)}) / ({side(self.den)})"


def key(name: str, agg: Agg, unit: str, doc: str, emitter: Emitter, **fields: object) -> Key:
    """A base or derived key; ``across`` defaults from ``agg``, derived keys get the window emitter."""
    if agg is Agg.RATIO:
        emitter = Emitter.DERIVED
    elif fields.get("across") is None:
        fields["across"] = DEFAULT_ACROSS[agg]
    if "variants" in fields:
        fields["variants"] = frozenset(fields["variants"])
    if "requires" in fields:
        fields["requires"] = frozenset(fields["requires"])
    return Key(name, agg, unit, doc, emitter, **fields)


def template(pattern: str, suffixes: Sequence[str], agg: Agg, unit: str, doc: str, emitter: Emitter,
             **fields: object) -> tuple[Key, ...]:
    """Expand ``pattern`` (one ``{}``) over a closed suffix set; ``{}`` in doc and num/den is filled too.

    Template keys are optional by nature: an emitter reports only the suffixes that occurred.
    """
    out = []
    for s in suffixes:
        per = dict(fields)
        for side in ("num", "den"):
            if side in per:
                per[side] = tuple(t.format(s) if isinstance(t, str) else (t[0], t[1].format(s)) for t in per[side])
        per.setdefault("optional", True)
        out.append(key(pattern.format(s), agg, unit, doc.format(s), emitter, family=pattern, **per))
    return tuple(out)


def ratio(name: str, num: Sequence[object], den: Sequence[object], unit: str, doc: str, **fields: object) -> Key:
    return key(name, Agg.RATIO, unit, doc, Emitter.DERIVED, num=num, den=den, **fields)


@attrs.frozen
class Registry:
    """The validated key table: lookup by name, in registration order (the docs and log order)."""

    keys: Mapping[str, Key]
    retired: Mapping[str, str]  # legacy name -> why coordexp does not log it (and what to read instead)

    def get(self, name: str) -> Key:
        found = self.keys.get(name)
        if found is not None:
            return found
        if name in self.retired:
            raise TelemetryError(f"metric key {name!r} is retired: {self.retired[name]}")
        close = difflib.get_close_matches(name, list(self.keys), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise TelemetryError(
            f"metric key {name!r} is not registered{hint} Register it in coordexp/telemetry/keys_*.py "
            "(name, aggregation, unit, doc, emitter) or stop emitting it"
        )

    def for_mode(self, mode: Mode) -> tuple[Key, ...]:
        return tuple(k for k in self.keys.values() if k.mode is mode)


def build_registry(keys: Iterable[Key], retired: Mapping[str, str]) -> Registry:
    """Check the table once: unique well-formed names, consistent rules, derived inputs registered."""
    table: dict[str, Key] = {}
    problems: list[str] = []
    for k in keys:
        if k.name in table:
            problems.append(f"{k.name}: registered twice")
        table[k.name] = k
    for k in table.values():
        problems.extend(_check_key(k, table, retired))
    if problems:
        raise TelemetryError("metric key registry is inconsistent:\n  " + "\n  ".join(problems))
    return Registry(table, dict(retired))


def _check_key(k: Key, table: Mapping[str, Key], retired: Mapping[str, str]) -> list[str]:
    out = []
    if not _NAME_RE.match(k.name):
        out.append(f"{k.name}: not a lower-case slash-separated name")
    if (k.mode is Mode.EVAL) != k.name.startswith("eval_"):
        out.append(f"{k.name}: eval keys, and only they, start with 'eval_'")
    if k.name in retired:
        out.append(f"{k.name}: both registered and retired")
    if not k.derived:
        if k.num or k.den or k.across not in _ALLOWED_ACROSS[k.agg]:
            out.append(f"{k.name}: a base key has no num/den and an across rule allowed for {k.agg}")
        return out
    if not k.num:
        out.append(f"{k.name}: a derived key needs a numerator")
    for name in k.inputs():
        src = table.get(name)
        if src is None or src.derived:
            out.append(f"{k.name}: input {name!r} must be a registered base key")
        elif src.mode is not k.mode or not k.variants <= src.variants:
            out.append(f"{k.name}: input {name!r} is not logged in every mode/variant the key is")
    return out


@attrs.frozen
class Parity:
    """What a run logged against what the registry expects of it (both sorted)."""

    unregistered: tuple[str, ...]  # logged but not registered (or internal, or retired)
    wrong_variant: tuple[str, ...]  # registered, but not for this variant / mode
    missing: tuple[str, ...]  # expected (not optional, requirements met) but never logged

    @property
    def ok(self) -> bool:
        return not (self.unregistered or self.wrong_variant or self.missing)

    def describe(self) -> str:
        parts = [f"{label}: {', '.join(names)}" for label, names in
                 (("unregistered", self.unregistered), ("wrong variant/mode", self.wrong_variant),
                  ("missing", self.missing)) if names]
        return "; ".join(parts) or "parity ok"


def check_parity(
    logged: Iterable[str], *, registry: Registry, mode: Mode, variant: str, features: Iterable[str] = ()
) -> Parity:
    """Every logged key is registered for this run, and every key the run should log was logged.

    ``logged`` is the union of the keys of every record a run wrote in ``mode``; ``features`` names
    what the run switched on (``packing``, ``repeat_terminate``, ``rollout_buffer``, ``desc_monitor``,
    ``vllm_server``, ``channel_b``...), which makes the keys that require them expected.
    """
    logged = set(logged)
    on = set(features)
    unregistered, wrong = [], []
    for name in sorted(logged):
        k = registry.keys.get(name)
        if k is None or k.internal:
            unregistered.append(name)
        elif k.mode is not mode or variant not in k.variants:
            wrong.append(name)
    missing = sorted(
        k.name for k in registry.for_mode(mode)
        if variant in k.variants and not k.internal and not k.optional and k.requires <= on and k.name not in logged
    )
    return Parity(tuple(unregistered), tuple(wrong), tuple(missing))
