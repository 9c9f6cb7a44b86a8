"""Training curves from ``logging.jsonl``: the families a user reads a run by (seed 000 section 6).

Each family is one PNG of the keys present in the log (a key the run never logged is named as
absent, not drawn as zeros): losses by term, detection quality (train and eval F1 / precision /
recall), truncation, generated tokens p90 against the ``max_new_tokens`` cap, the Stage-2 AB channel
mix, the desc monitor's agreement, and the guard's alarms. ``flags`` turns the seed's health ranges
into page flags: p90 pegged at the cap, truncation above 5 %, any guard alarm, a non-finite value.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

import attrs

from coordexp.report.page import Level
from coordexp.telemetry.sinks import LogRecord, last_per_step

TRUNCATION_WARN = 0.05  # seed 000 section 6.1: parse_truncated_rate "ideally < 0.05"
Series = Mapping[tuple[str, str], Sequence[tuple[int, float]]]  # (mode, key) -> [(step, value)]


def collect(records: Iterable[LogRecord]) -> dict[tuple[str, str], list[tuple[int, float]]]:
    """Every metric of the train and eval records as a step series (the last record per step wins)."""
    out: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for r in last_per_step(records):
        if r.mode == "meta":
            continue
        for name, value in r.metrics.items():
            out.setdefault((r.mode, name), []).append((r.step, value))
    return out


@attrs.frozen
class Family:
    """One plot: which logged keys it draws and, optionally, the key drawn as a dashed cap."""

    slug: str  # PNG file stem
    title: str
    ylabel: str
    select: Callable[[Iterable[tuple[str, str]]], list[tuple[str, str]]]
    cap: tuple[str, str] | None = None
    expected: tuple[str, ...] = ()  # keys named in the page when absent
    hide_zero: bool = False  # leave out keys that are 0 at every step (loss terms whose weight is 0)


def _named(*wanted: tuple[str, str]) -> Callable[[Iterable[tuple[str, str]]], list[tuple[str, str]]]:
    return lambda present: [w for w in wanted if w in set(present)]


def _prefixed(mode: str, prefix: str, *extra: str) -> Callable[[Iterable[tuple[str, str]]], list[tuple[str, str]]]:
    def select(present: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        present = set(present)
        head = [(mode, k) for k in extra if (mode, k) in present]
        return head + sorted(p for p in present if p[0] == mode and p[1].startswith(prefix))
    return select


TRAIN, EVAL = "train", "eval"
FAMILIES: tuple[Family, ...] = (
    Family("losses", "Losses by term", "loss", _prefixed(TRAIN, "loss/", "loss"), expected=("loss",),
           hide_zero=True),
    Family("detection", "Detection quality (train rollouts, eval)", "fraction", _named(
        (EVAL, "eval_rollout/f1"), (EVAL, "eval_rollout/precision"), (EVAL, "eval_rollout/recall"),
        (TRAIN, "rollout/f1"), (TRAIN, "rollout/precision"), (TRAIN, "rollout/recall")),
        expected=("eval_rollout/f1", "eval_rollout/precision", "eval_rollout/recall")),
    Family("truncation", "Truncation rate", "fraction", _named(
        (TRAIN, "rollout/parse_truncated_rate"), (EVAL, "eval_rollout/parse_truncated_rate")),
        expected=("rollout/parse_truncated_rate",)),
    Family("gen_tokens", "Generated tokens p90 against the max_new_tokens cap", "tokens", _named(
        (TRAIN, "rollout/gen_new_tokens_p90"), (TRAIN, "rollout/gen_new_tokens_mean"),
        (EVAL, "eval_rollout/gen_new_tokens_p90")), cap=(TRAIN, "rollout/max_new_tokens"),
        expected=("rollout/gen_new_tokens_p90",)),
    Family("channel_mix", "Channel mix (Stage-2 AB)", "fraction", _named(
        (TRAIN, "stage2/channel_a"), (TRAIN, "stage2/channel_b"), (TRAIN, "stage2_ab/b_ratio_realized"),
        (TRAIN, "stage2_ab/b_ratio_scheduled"))),
    Family("desc", "Desc agreement of matched pairs (desc monitor)", "fraction", _named(
        (TRAIN, "rollout/desc_exact_acc_on_matched"), (TRAIN, "rollout/desc_sem_acc_on_matched"),
        (TRAIN, "rollout/desc_sem_sim_mean"), (EVAL, "eval_rollout/desc_exact_acc_on_matched"),
        (EVAL, "eval_rollout/desc_sem_acc_on_matched"), (EVAL, "eval_rollout/desc_sem_sim_mean"))),
    Family("guard", "Guard alarms", "steps", _prefixed(TRAIN, "guard/")),
)


def _label(mode: str, key: str) -> str:
    return key if mode == TRAIN or key.startswith("eval_") else f"{mode}:{key}"


def always_zero(family: Family, series: Series) -> list[str]:
    """The family's keys left out of its plot because they are 0 at every logged step."""
    if not family.hide_zero:
        return []
    return [_label(m, k) for m, k in family.select(series.keys()) if all(v == 0 for _, v in series[(m, k)])]


def plot_family(family: Family, series: Series, out_dir: Path) -> tuple[Path | None, list[str]]:
    """The family's PNG (None when none of its keys was logged) and the names of the curves drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    zero = set(always_zero(family, series))
    chosen = [(m, k) for m, k in family.select(series.keys()) if _label(m, k) not in zero]
    if not chosen:
        return None, []
    fig, ax = plt.subplots(figsize=(9.0, 3.8), dpi=100)
    palette = plt.get_cmap("tab10" if len(chosen) <= 10 else "tab20").colors  # one colour per curve
    for i, (mode, key) in enumerate(chosen):
        steps, values = zip(*series[(mode, key)])
        ax.plot(steps, values, marker="o" if len(steps) < 40 else None, markersize=3, color=palette[i % len(palette)],
                linestyle="--" if mode == EVAL else "-", label=_label(mode, key))
    names = [_label(m, k) for m, k in chosen]
    if family.cap is not None and family.cap in series:
        steps, values = zip(*series[family.cap])
        ax.plot(steps, values, color="black", linestyle=":", linewidth=1.5, label=f"cap ({family.cap[1]})")
        names.append(f"{family.cap[1]} (cap)")
    ax.set_title(family.title)
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(family.ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{family.slug}.png"
    fig.savefig(path)
    plt.close(fig)
    return path, names


def _steps(points: Sequence[tuple[int, float]]) -> str:
    shown = ", ".join(str(s) for s, _ in points[:8])
    return shown + (f" (+{len(points) - 8} more)" if len(points) > 8 else "")


def flags(series: Series) -> list[tuple[str, Level, str]]:
    """(family slug, level, text) for every value outside the seed's healthy ranges."""
    out: list[tuple[str, Level, str]] = []
    caps = dict(series.get((TRAIN, "rollout/max_new_tokens"), ()))
    pegged = [(s, v) for s, v in series.get((TRAIN, "rollout/gen_new_tokens_p90"), ()) if s in caps and v >= caps[s]]
    if pegged:
        out.append(("gen_tokens", Level.BAD, f"rollout/gen_new_tokens_p90 reaches max_new_tokens at step(s) "
                    f"{_steps(pegged)}: rollouts fill the budget (seed cure: lower max_new_tokens, set "
                    "repeat_terminate.max_object_keys)"))
    for mode, key in ((TRAIN, "rollout/parse_truncated_rate"), (EVAL, "eval_rollout/parse_truncated_rate")):
        high = [(s, v) for s, v in series.get((mode, key), ()) if v > TRUNCATION_WARN]
        if high:
            worst = max(v for _, v in high)
            out.append(("truncation", Level.WARN, f"{key} above {TRUNCATION_WARN} at step(s) {_steps(high)} "
                        f"(max {worst:.3f})"))
    for (mode, key), points in sorted(series.items()):
        if mode == TRAIN and key.startswith("guard/alarm/"):
            fired = [(s, v) for s, v in points if v > 0]
            if fired:
                out.append(("guard", Level.WARN, f"{key} fired at step(s) {_steps(fired)}"))
        bad = [(s, v) for s, v in points if not math.isfinite(v)]
        if bad:
            out.append(("values", Level.BAD, f"{mode} {key} is not finite at step(s) {_steps(bad)}"))
    return out
