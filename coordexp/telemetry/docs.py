"""Generate ``docs/metrics.md`` (every metric key: aggregation, ranks, unit, variants, emitter) from the registry.

    python -m coordexp.telemetry.docs            # print the reference
    python -m coordexp.telemetry.docs --write    # rewrite docs/metrics.md
    python -m coordexp.telemetry.docs --check    # exit 1 when docs/metrics.md is stale

The registry (``coordexp.telemetry.keys``) is the only source, so the reference cannot drift from what
the window accepts without a failing test.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from pathlib import Path

from coordexp.cli import generated_doc_main
from coordexp.telemetry.keymodel import DEFAULT_ACROSS
from coordexp.telemetry.keys import BOTH, REGISTRY, RETIRED, Key, Mode

DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
REGENERATE = "python -m coordexp.telemetry.docs --write"

HEADER = f"""# Metrics reference

Generated from the key registry (`coordexp/telemetry/keys_*.py`) by `{REGENERATE}`; do not edit by hand.

Every optimizer step's metrics are folded into a logging window (`training.logging_steps` steps) and
written once per window to `logging.jsonl` and TensorBoard; nothing of a window's steps is lost. Each
key has one rule over the window's steps and one over DDP ranks:

| rule | over the window's steps | over ranks |
|---|---|---|
| sum | sum | sum (time keys: the slowest rank) |
| mean | mean over every step; each step must report it | total / total steps |
| sparse | mean over the steps that reported it | total / total reporting steps |
| max, min | max, min | max, min |
| last | the last reporting step's value | mean of the ranks' values (unless noted) |
| ratio / derived | computed after both reductions from the summed counts it names | |

A ratio is never a mean of ratios. Keys marked *not logged* are helper numerators or denominators.
`logging.jsonl` has one JSON object per line: `{{"schema_version": 1, "mode": "train" | "eval" | "meta",
"step", "time", "metrics"}}`; a non-finite value (a NaN loss) is written as `null` and named under
`"nonfinite"`. Evaluation records hold the `eval_*` keys; `training.metric_for_best_model` names one of
them without the `eval_` prefix. Variants: RM = `rollout_matching_sft`, AB = `stage2_ab_training`.
Keys with a `<suffix>` are families: only the listed suffixes exist, and most report only non-zero members.
"""

_SECTIONS = (
    ("Learner", ("loss", "grad_norm", "learning_rate", "learn/", "train/samples_per_micro")),
    ("Time", ("time/",)),
    ("Step bookkeeping and diagnostics", ("train/", "rollout/dropped_samples", "telemetry/")),
    ("Rollout buffer", ("rollout/buffer_",)),
    ("Rollouts: parse, match, target, generation", ("rollout/",)),
    ("Post-rollout packing", ("packing/",)),
    ("Stage-2 AB", ("stage2/", "stage2_ab/")),
    ("Stability guard and Channel-B pipeline", ("guard/", "pipeline/")),
    ("Evaluation", ("eval_rollout/", "eval_time/")),
)


def _section(k: Key) -> str:
    for title, prefixes in _SECTIONS:
        if any(k.name == p or k.name.startswith(p) for p in prefixes):
            return title
    raise ValueError(f"metric key {k.name} has no docs section; add its prefix to _SECTIONS")


def _variants(k: Key) -> str:
    if k.variants == BOTH:
        return "all"
    return ", ".join("AB" if v == "stage2_ab_training" else "RM" for v in sorted(k.variants))


def _rule(k: Key) -> str:
    if k.derived:
        when_zero = "absent" if k.if_zero is None else f"{k.if_zero:g}"
        if not k.den:
            return f"derived: `{k.formula()}`"
        if_zero = "" if k.if_zero == 0.0 else f" (den 0: {when_zero})"
        return f"ratio: `{k.formula()}`{if_zero}"
    across = "" if k.across is DEFAULT_ACROSS[k.agg] else f", ranks: {k.across.value}"
    return f"{k.agg.value}{across}"


def _notes(k: Key) -> str:
    notes = []
    if k.internal:
        notes.append("not logged")
    if k.requires - {"rollouts"}:
        notes.append("needs " + ", ".join(sorted(k.requires - {"rollouts"})))
    if k.optional and k.family is None:
        notes.append("optional")
    return "; ".join(notes)


def _rows(keys: Iterable[Key]) -> list[str]:
    rows, seen = [], set()
    for k in keys:
        name, doc, rule = k.name, k.doc, _rule(k)
        if k.family is not None:
            if k.family in seen:
                continue
            seen.add(k.family)
            members = [x.name.rsplit("/", 1)[1] for x in REGISTRY.keys.values() if x.family == k.family]
            name = k.family.replace("{}", "<suffix>")
            listed = ", ".join(f"`{m}`" for m in members)
            doc = doc.replace(f"`{members[0]}`", "`<suffix>`") + f" Suffixes: {listed}."
            rule = rule.replace(f"/{members[0]}`", "/<suffix>`")
        doc = doc.replace("|", "\\|")  # <|im_end|> inside a table cell
        rows.append(f"| `{name}` | {rule} | {k.unit} | {_variants(k)} | {k.emitter.value} | {_notes(k)} | {doc} |")
    return rows


def render() -> str:
    out = [HEADER]
    keys = [*REGISTRY.for_mode(Mode.TRAIN), *REGISTRY.for_mode(Mode.EVAL)]
    for title, _ in _SECTIONS:
        chosen = [k for k in keys if _section(k) == title]
        out += [f"## {title}", "", "| key | rule | unit | variants | emitted by | notes | meaning |",
                "|---|---|---|---|---|---|---|", *_rows(chosen), ""]
    out += ["## Retired names", "", "Names the runbooks or the legacy trainers used that coordexp does not log; "
            "emitting one is an error.", "", "| name | why / read instead |", "|---|---|"]
    out += [f"| `{name}` | {why} |" for name, why in RETIRED.items()]
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    return generated_doc_main(argv, prog="python -m coordexp.telemetry.docs", description=__doc__.splitlines()[0], path=DOCS_PATH,
                              render=render, regenerate=REGENERATE)


if __name__ == "__main__":
    sys.exit(main())
