"""Registry table: the stability guard's alarms and inputs, and the Channel-B pipeline's time keys.

The guard (``coordexp.telemetry.guard``) judges ratios the window computes from the rollout counts, so
the two ratios it needs beyond ``keys_rollout`` are registered here as derived keys (logged on every
step that rolled out, guard on or off). ``guard/alarm/<name>`` counts the evaluations that raised the
alarm; a window's sum is how many rollout steps were in alarm.
"""

from __future__ import annotations

from coordexp.telemetry.keymodel import AB, Across, Agg, Emitter, Key, key, ratio, template

X = Emitter.EXECUTOR

# The alarm names, in the order the guard evaluates them (coordexp.telemetry.guard.RULES follows it).
ALARMS: tuple[str, ...] = ("length_saturation", "truncation", "invalid_drops", "over_generation", "duplicate_spam",
                           "coord_slot_contamination")

_INPUTS: tuple[Key, ...] = (
    ratio("rollout/gen_new_tokens_p90_frac", ["rollout/gen_new_tokens_p90"], ["rollout/max_new_tokens"], "fraction",
          "rollout/gen_new_tokens_p90 / max_new_tokens: 1.0 means the rollouts peg the token cap.", if_zero=None),
    ratio("rollout/invalid_coord_slots_per_sample", ["rollout/invalid_coord_slots"], ["rollout/samples"], "slots",
          "Non-coord tokens in geometry slots per rollout (the seed's coord-slot contamination)."),
)

_ALARMS: tuple[Key, ...] = (
    *template("guard/alarm/{}", ALARMS, Agg.SUM, "steps",
              "Rollout steps on which the stability guard raised `{}` (custom.extra.stability_guard).", X),
    key("guard/backoff", Agg.SUM, "steps", "Steps on which the guard lowered b_ratio (from the next step on).", X,
        variants=[AB], optional=True),
)

_PIPELINE: tuple[Key, ...] = (
    key("time/rollout_wait_s", Agg.SUM, "s",
        "Pipelined Channel-B: time the learner thread waited for the next rollout chunk.", X, across=Across.MAX,
        optional=True),
    key("time/pipeline_overlap_s", Agg.SUM, "s",
        "Pipelined Channel-B: rollout time hidden behind parse/match/target/pack and learning "
        "(time/rollout_generate_s minus the waits).", X, across=Across.MAX, optional=True),
    key("pipeline/chunks", Agg.SUM, "chunks", "Pipelined Channel-B: rollout chunks (decode_batch_size each).", X,
        variants=[AB], optional=True),
)

KEYS: tuple[Key, ...] = (*_INPUTS, *_ALARMS, *_PIPELINE)
