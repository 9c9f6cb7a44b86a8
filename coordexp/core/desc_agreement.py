"""Desc agreement of matched pairs: the desc monitor's rules (reference rollout 11.2), torch-free.

Matching is geometric, so a matched pair can still name the wrong thing ("dog" on a cat's box). The
desc monitor measures that, as metrics only (it never touches a loss): each matched pair's predicted
and GT descs are normalised, compared exactly, and (modes ``semantic`` / ``both``) by the cosine of
their sentence embeddings. The similarity function is passed in, so these rules are tested without a
model and the encoder (``coordexp.telemetry.desc_monitor``) stays the only torch part.

Rules, as the reference states them:
- normalise: strip, lowercase, ``_ / ( )`` become spaces, whitespace collapses;
- a *pair* is counted only when both normalised descs are non-empty;
- exact_ok: the normalised descs are equal;
- semantic ok: exact_ok, or cosine >= ``semantic_threshold``; every counted pair has a similarity.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

MODES = ("semantic", "both", "exact")
DEFAULT_TRAIN_MAX_PAIRS = 64  # the reference's training cap when max_pairs is 0

_SEPARATORS = re.compile(r"[_/()]")
_SPACES = re.compile(r"\s+")

Similarity = Callable[[Sequence[str], Sequence[str]], Sequence[float]]  # (preds, gts) -> cosine per pair


def normalize_desc(desc: str) -> str:
    return _SPACES.sub(" ", _SEPARATORS.sub(" ", desc.strip().lower())).strip()


@attrs.frozen
class DescMonitorSettings:
    """The ``rollout_matching.desc_monitor`` knobs, as ``coordexp.bind.bind_desc_monitor`` reads them."""

    enabled: bool
    mode: Literal["semantic", "both", "exact"] = attrs.field(validator=attrs.validators.in_(MODES))
    every_steps: int  # already resolved: 0 became training.logging_steps
    max_pairs: int  # 0: no cap at evaluation, DEFAULT_TRAIN_MAX_PAIRS in training
    semantic_threshold: float
    semantic_model: str
    semantic_device: str
    semantic_batch_size: int
    semantic_max_length: int

    @property
    def semantic(self) -> bool:
        return self.mode in ("semantic", "both")

    def due(self, step: int, *, last_seen: int | None = None) -> bool:
        """Whether a step with rollouts measures: a multiple of ``every_steps`` lies in ``(last_seen, step]``.

        ``last_seen`` is the previous step with rollouts the monitor saw (None: none yet). When every step
        rolls out (rollout_matching_sft) this is the reference's ``step % every_steps == 0``; in Stage-2 AB
        a multiple that falls on a Channel-A step (no rollouts) is measured on the next Channel-B step,
        so a B-cold schedule is still monitored every ``every_steps`` steps.
        """
        every = max(1, self.every_steps)
        before = -1 if last_seen is None else last_seen
        return self.enabled and step // every > before // every

    def pair_cap(self, *, training: bool) -> int | None:
        if self.max_pairs > 0:
            return self.max_pairs
        return DEFAULT_TRAIN_MAX_PAIRS if training else None


@attrs.frozen
class DescTally:
    """Counts of one step (or eval batch); the metric keys are these sums (ratios are derived)."""

    pairs: int = 0
    exact_ok: int = 0
    sem_ok: int = 0
    sim_sum: float = 0.0
    sim_count: int = 0
    semantic: bool = False  # the encoder scored these pairs


def counted_pairs(pairs: Sequence[tuple[str, str]], cap: int | None) -> list[tuple[str, str]]:
    """The first ``cap`` pairs (in match order), normalised, keeping only those with both descs non-empty."""
    chosen = pairs if cap is None else pairs[:cap]
    normed = [(normalize_desc(p), normalize_desc(g)) for p, g in chosen]
    return [(p, g) for p, g in normed if p and g]


def tally(pairs: Sequence[tuple[str, str]], *, cap: int | None, threshold: float,
          similarity: Similarity | None = None) -> DescTally:
    """Exact (and, with ``similarity``, semantic) agreement of (pred desc, GT desc) pairs."""
    kept = counted_pairs(pairs, cap)
    exact = [p == g for p, g in kept]
    if similarity is None:
        return DescTally(pairs=len(kept), exact_ok=sum(exact))
    sims = [float(s) for s in similarity([p for p, _ in kept], [g for _, g in kept])] if kept else []
    if len(sims) != len(kept):
        raise ValueError(f"similarity returned {len(sims)} values for {len(kept)} pairs")
    sem_ok = sum(e or s >= threshold for e, s in zip(exact, sims))
    return DescTally(pairs=len(kept), exact_ok=sum(exact), sem_ok=sem_ok, sim_sum=sum(sims), sim_count=len(sims),
                     semantic=True)


def tally_metrics(t: DescTally, *, prefix: str) -> dict[str, float]:
    """The registered base keys of a tally under ``prefix`` (``rollout`` or ``eval_rollout``)."""
    out = {f"{prefix}/desc_pairs_total": float(t.pairs), f"{prefix}/desc_exact_ok": float(t.exact_ok),
           f"{prefix}/desc_sem_enabled": float(t.semantic)}
    if t.semantic:
        out.update({f"{prefix}/desc_sem_ok": float(t.sem_ok), f"{prefix}/desc_sem_sim_sum": t.sim_sum,
                    f"{prefix}/desc_sem_sim_count": float(t.sim_count)})
    return out
