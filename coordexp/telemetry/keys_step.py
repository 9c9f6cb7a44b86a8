"""Registry table: per-step keys outside ``rollout/*``: losses, time, bookkeeping, packing, schedule, buffer.

Names follow the seeds (runbooks 001-003) and reference rollout §12.2 / AB §8.2-8.4. The learner's own
names (``loss``, ``grad_norm``, ``learn/*``) are what ``coordexp.learn.learner.StepStats.metrics``
emits. Time keys are summed over a window's steps and the slowest rank is reported (ranks run in
parallel, steps one after another).
"""

from __future__ import annotations

from coordexp.telemetry.keymodel import AB, Across, Agg, Emitter, Key, key, ratio, template

L, X, P, S = Emitter.LEARNER, Emitter.EXECUTOR, Emitter.PACKING, Emitter.SCHEDULE

# Dropped-sample reasons: ``<stage>_<cause>`` as coordexp.stages names them.
DROP_STAGES: tuple[str, ...] = ("prompt", "gt_target", "target")
DROP_CAUSES: tuple[str, ...] = ("DataError", "TargetError", "AppendError", "TokenizerError", "too_long")
SAMPLE_DROP_REASONS: tuple[str, ...] = tuple(f"{s}_{c}" for s in DROP_STAGES for c in DROP_CAUSES)
# Diagnostics run under coordexp.telemetry.diagnostics.DiagnosticGuard (they warn once, never stop training).
DIAGNOSTICS: tuple[str, ...] = ("desc_monitor", "monitor_dump", "tensorboard")

_LOSS: tuple[Key, ...] = (
    key("loss", Agg.SPARSE, "nats",
        "Optimized loss of the step (CE + coord + weighted geometry); steps without a forward do not count.", L),
    key("loss/ce", Agg.SPARSE, "nats", "Token-weighted CE mean of the step.", L),
    key("loss/coord", Agg.SPARSE, "", "Weighted coord-slot loss (softCE + W1 + gate) mean of the step.", L),
    key("loss/coord_prefix", Agg.SPARSE, "", "Coord-slot loss over prefix slots (0 when the step had none).", L),
    key("loss/coord_tail", Agg.SPARSE, "", "Coord-slot loss over tail slots (0 when the step had none).", L),
    *(key(f"loss/{n}", Agg.SPARSE, "", doc, L, variants=[AB], optional=True) for n, doc in (
        ("bbox_smoothl1", "SmoothL1 on expectation-decoded boxes, mean over the step's boxes (unweighted; Channel-A GT "
         "boxes, Channel-B matched-prefix and FN boxes)."),
        ("bbox_ciou", "1 - CIoU on expectation-decoded boxes, mean over the step's boxes (unweighted)."),
        ("coord_ce", "Coord-slot CE regulariser (unweighted)."),
        ("coord_el1", "Expected-L1 coord regulariser (unweighted)."),
        ("coord_ehuber", "Expected-Huber coord regulariser (unweighted)."),
        ("coord_entropy", "Coord distribution entropy (unweighted)."),
        ("coord_reg", "Weighted sum of the coord regularisers."),
    )),
    key("loss/bbox_nonfinite", Agg.SUM, "values",
        "Non-finite SmoothL1 / CIoU values counted as 0 (should stay 0; rising means degenerate boxes or logits).",
        L, variants=[AB], optional=True),
    key("grad_norm", Agg.SPARSE, "", "Gradient norm before clipping.", L),
    key("learning_rate", Agg.LAST, "", "Learning rate of the first parameter group.", L),
    key("learn/packs", Agg.SUM, "forwards", "Forward/backward passes (packs or padded batches).", L),
    key("learn/segments", Agg.SUM, "segments", "Segments (samples) learned.", L),
    key("learn/supervised_tokens", Agg.SUM, "tokens", "CE tokens plus coord slots supervised.", L),
    ratio("train/samples_per_micro", ["learn/segments"], ["learn/packs"], "segments", "Segments per forward."),
)

_TIME: tuple[Key, ...] = tuple(
    key(f"time/{n}", Agg.SUM, "s", doc, X, across=Across.MAX, optional=opt) for n, doc, opt in (
        ("step_s", "Wall time of the optimizer steps.", False),
        ("forward_s", "Learner forward + backward + optimizer.", False),
        ("rollout_generate_s", "Rollout generation (0 on buffer-reuse and Channel-A steps).", True),
        ("rollout_parse_match_s", "Parse + prefix policy + match.", True),
        ("rollout_teacher_encode_s", "BuildTarget + teacher-forced encoding.", False),
        ("post_rollout_pack_s", "Packing segment selection and collation.", True),
    )
)

_TRAIN: tuple[Key, ...] = (
    key("train/samples_total", Agg.SUM, "samples", "Raw samples drawn this step.", X),
    key("train/samples_seen", Agg.LAST, "samples", "Raw samples drawn since the run started (all ranks).", X),
    key("train/epoch", Agg.LAST, "epochs", "Fractional epoch at the end of the step.", X),
    key("train/global_step", Agg.LAST, "steps", "Optimizer steps done at the end of the step.", X),
    key("learn/skipped_steps", Agg.SUM, "steps",
        "Steps that learned nothing because some rank had no pack left (all its samples dropped).", X),
    key("rollout/dropped_samples_total", Agg.SUM, "samples", "Samples a stage could not use (dropped, counted).", X),
    *template("rollout/dropped_samples/{}", SAMPLE_DROP_REASONS, Agg.SUM, "samples",
              "Samples dropped with reason `{}` (stage_cause).", X),
    *template("telemetry/diagnostic_failures/{}", DIAGNOSTICS, Agg.SUM, "failures",
              "Failures of the `{}` diagnostic (warned once; training goes on).", Emitter.TELEMETRY),
)

_PACKING: tuple[Key, ...] = (
    key("packing/post_rollout_packs", Agg.SUM, "packs", "Packs built from post-rollout segments.", P,
        requires=["packing"]),
    key("packing/post_rollout_fill_sum", Agg.SUM, "", "Sum of pack fills.", P, internal=True, requires=["packing"]),
    key("packing/post_rollout_len_sum", Agg.SUM, "tokens", "Tokens in the packs.", P, internal=True,
        requires=["packing"]),
    key("packing/post_rollout_segments_sum", Agg.SUM, "segments", "Segments in the packs.", P, internal=True,
        requires=["packing"]),
    key("packing/post_rollout_fifo_len_sum", Agg.SUM, "tokens", "Tokens FIFO-greedy would have packed.", P,
        internal=True, requires=["packing"]),
    key("packing/post_rollout_buffer", Agg.LAST, "segments", "Segments left in the carry buffer after the last pack.",
        P, requires=["packing"]),
    key("packing/post_rollout_underfilled", Agg.SUM, "packs", "Packs below packing_min_fill_ratio.", P,
        requires=["packing"]),
    key("packing/avg_segment_len_last", Agg.LAST, "tokens", "Mean segment length of the last pack.", P,
        requires=["packing"]),
    key("packing/avg_segment_len_ema", Agg.LAST, "tokens", "EMA (weight 0.2 on the newest pack) of pack mean lengths.",
        P, requires=["packing"]),
    ratio("packing/post_rollout_fill", ["packing/post_rollout_fill_sum"], ["packing/post_rollout_packs"], "fraction",
          "Mean pack fill (tokens / packing_length) over the window's packs.", requires=["packing"]),
    ratio("packing/post_rollout_selected_total_len", ["packing/post_rollout_len_sum"],
          ["packing/post_rollout_packs"], "tokens", "Mean tokens per pack.", requires=["packing"]),
    ratio("packing/post_rollout_segments", ["packing/post_rollout_segments_sum"], ["packing/post_rollout_packs"],
          "segments", "Mean segments per pack.", requires=["packing"]),
    ratio("packing/post_rollout_gain_vs_fifo", ["packing/post_rollout_len_sum"], ["packing/post_rollout_fifo_len_sum"],
          "ratio", "Packed tokens / what FIFO-greedy would have packed.", requires=["packing"]),
)

_SCHEDULE: tuple[Key, ...] = (
    key("stage2/channel_a", Agg.MEAN, "fraction", "1 on Channel-A steps (window: share of A steps).", S, variants=[AB]),
    key("stage2/channel_b", Agg.MEAN, "fraction", "1 on Channel-B steps (window: share of B steps).", S, variants=[AB]),
    key("stage2_ab/b_ratio_scheduled", Agg.LAST, "fraction", "The b_ratio piece in effect at the step.", S,
        variants=[AB]),
    key("stage2_ab/b_ratio_realized", Agg.LAST, "fraction", "Share of B steps over the last 200 optimizer steps.", S,
        variants=[AB]),
)

_BUFFER: tuple[Key, ...] = (
    key("rollout/buffer_reuse", Agg.MEAN, "fraction", "1 on M-steps (reused rollouts), 0 on E-steps; filter on 0.", X,
        requires=["rollout_buffer"]),
    key("rollout/buffer_window_step0", Agg.LAST, "step", "Optimizer step that filled the cached window.", X,
        requires=["rollout_buffer"]),
    key("rollout/buffer_completed_steps", Agg.LAST, "steps", "Steps already learned from the cached window.", X,
        requires=["rollout_buffer"]),
)

KEYS: tuple[Key, ...] = (*_LOSS, *_TIME, *_TRAIN, *_PACKING, *_SCHEDULE, *_BUFFER)
