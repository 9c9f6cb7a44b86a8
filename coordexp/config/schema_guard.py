"""``custom.extra.stability_guard.*``: named alarms on the live rollout metrics, and what a run does on one.

Why it exists: seed 000's B-hot run degraded for hundreds of steps (rollouts pegged at the token cap,
truncation 0.37, thousands of dropped objects, 2-3x over-generation, 90 copies of one label) while
nothing but the eval table said so. The guard watches the same signals on every step that rolled out
and raises a named alarm (log, ``guard/alarm/<name>`` in logging.jsonl, the progress bar); by config it
stops the run (a checkpoint is saved first) or backs b_ratio off. The threshold defaults are the seed's
healthy values (section 5/6): truncation < 0.05, p90 well below the cap, drops and contamination near 0,
predicted/GT objects near 1x, no label repeated dozens of times. A threshold set to null turns that one
alarm off. The rule evaluation is ``coordexp.telemetry.guard``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob

GuardAction = Literal["warn", "stop", "backoff"]


@attrs.frozen
class StabilityGuardConfig:
    enabled: bool = knob(False, help="Watch the rollout metrics of every step that rolled out and raise named "
                         "alarms (the shipped base configs turn it on).")
    window: int = knob(1, help="Rollout steps pooled per evaluation (sums of counts, max of p90 / duplicates), "
                       "so a rate is judged on window x rollouts_per_step rollouts (>= 1).")
    patience: int = knob(2, help="Consecutive breaching evaluations before an alarm is raised (>= 1); one noisy "
                         "step alone never stops or backs off a run.")
    action: GuardAction = knob(
        "warn",
        help="On an alarm: `warn` (log, metric, progress bar), `stop` (save a checkpoint, exit non-zero naming the "
        "alarm; start a fixed run from that checkpoint), `backoff` (lower b_ratio to backoff_b_ratio from the next step for "
        "the rest of the run, persisted across resume; an alarm while already at or below it stops the run; "
        "stage2_ab_training with a b_ratio schedule only).",
    )
    backoff_b_ratio: float = knob(0.02, help="The b_ratio a `backoff` sets, in [0, 1).")
    max_gen_p90_frac: float | None = knob(
        0.9, help="Alarm `length_saturation` when rollout/gen_new_tokens_p90 / max_new_tokens exceeds this (seed: the "
        "collapsed run pegged p90 at the cap, 1.0; the healthy baseline was ~0.35).")
    max_truncated_rate: float | None = knob(
        0.05, help="Alarm `truncation` when rollout/parse_truncated_rate exceeds this (seed: healthy < 0.05; 0.37 "
        "in the collapse).")
    max_drop_frac: float | None = knob(
        0.05, help="Alarm `invalid_drops` when rollout/parse_obj_drop_frac (dropped invalid / all predicted objects) "
        "exceeds this (seed: 0.001 healthy, 0.27 in the collapse).")
    max_pred_gt_ratio: float | None = knob(
        1.5, help="Alarm `over_generation` when rollout/pred_gt_ratio (valid predicted / GT objects) exceeds this "
        "(seed: 1.3 healthy, 2.2-2.4 in the collapse).")
    max_desc_duplicates: int | None = knob(
        20, help="Alarm `duplicate_spam` when rollout/max_desc_duplicates (most valid objects sharing one desc in "
        "one rollout) exceeds this (seed: 20-90 copies of `flagpole`).")
    max_invalid_coord_slots: float | None = knob(
        0.5, help="Alarm `coord_slot_contamination` when rollout/invalid_coord_slots per rollout (digits, words, CJK "
        "in bbox slots) exceeds this (seed: ~14 per rollout in the collapse, near 0 healthy).")
