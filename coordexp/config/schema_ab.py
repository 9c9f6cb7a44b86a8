"""``custom.extra.stage2_ab.*``: the A/B schedule, Channel-A soft self-context, Channel-B execution, losses.

coordexp deliberately accepts three keys that the Feb legacy trainer had removed, because the user's runbooks
(seeds) still use them and they are useful:

- ``schedule.pattern`` (a cycle such as ``[A, A, B]``) as an alternative to ``schedule.b_ratio``;
- ``channel_b.mode`` (``micro`` | ``step``) and ``channel_b.rollouts_per_step``;
- ``channel_b.enable_pipeline`` (overlap the rollouts of the next chunk with the current chunk's parse / match /
  target work, any backend; ``coordexp.pipeline``).

``schedule.b_ratio`` also accepts a piecewise ramp (the post-mortem's "0.05 -> 0.10 -> 0.20") so a ramp is a
config change, not a relaunch. The Bresenham rule itself lives in ``coordexp.core.schedule``.
"""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob, section


@attrs.frozen
class RampPoint:
    value: float = knob(help="B-step fraction in [0, 1] for this stretch of steps.")
    until_step: int | None = knob(
        None,
        help="Use `value` for optimizer steps < until_step (strictly increasing). Null or omitted only on the last "
        "entry = forever; a last entry with an until_step keeps its value after it.",
    )


BRatio = float | tuple[RampPoint, ...]


@attrs.frozen
class ScheduleConfig:
    pattern: tuple[Literal["A", "B"], ...] | None = knob(
        None, help="Channel cycle, e.g. `[A, A, B]`: step s uses pattern[s % len]. Give this OR `b_ratio`."
    )
    b_ratio: BRatio | None = knob(
        None,
        help="Fraction of optimizer steps that are Channel-B (Bresenham: B iff floor((s+1)r) > floor(s*r)). "
        "A float in [0, 1], or a ramp list of `{until_step, value}` (the last piece may omit until_step; the last "
        "value stays after it). In a ramp each piece counts steps from its own first step, so every piece realises "
        "its own ratio.",
    )


@attrs.frozen
class ChannelBConfig:
    mode: Literal["micro", "step"] = knob(
        "step",
        help="`step`: collect the whole accumulation window, roll out, pack into several forwards, one optimizer "
        "step (needs packing + dataloader_drop_last). `micro`: roll out and learn per micro-batch.",
    )
    enable_pipeline: bool = knob(
        False, help="Roll out the step in decode_batch_size chunks on a producer thread, overlapping chunk k+1's "
        "generation with chunk k's parse/match/target; learning keeps the exact step-token normalisation (any "
        "backend; pays off when rollouts run on other GPUs: vLLM server)."
    )
    rollouts_per_step: int | None = knob(
        None, help="Raw samples a Channel-B step rolls out (global); null = `training.effective_batch_size`, which "
        "Channel-A steps always take (and which epoch-based step counts assume)."
    )
    drop_invalid_struct_ce_multiplier: float = knob(
        1.0, help="CE weight multiplier on FN-structure and closure tokens of samples with invalid objects, in [1, 4]."
    )


@attrs.frozen
class Stage2ABConfig:
    schedule: ScheduleConfig = section(ScheduleConfig, help="Which optimizer steps are Channel-A and which Channel-B.")
    n_softctx_iter: int = knob(1, help="Channel-A full forwards (>= 1): 1 = plain teacher forcing, 2 = one soft self-context "
                               "pass (coord inputs become the expected coord embedding under the previous forward).")
    softctx_grad_mode: Literal["unroll", "em_detach"] = knob(
        "unroll", help="`unroll`: gradients through every iteration; `em_detach`: middle iterations without grad, the "
        "last one fed detached embeddings (the first forward keeps its CE gradient)."
    )
    coord_ctx_embed_mode: Literal["soft", "st"] = knob(
        "soft", help="Channel-A coord context: `soft` = the expected coord embedding; `st` = straight-through (the "
        "argmax bin's embedding forward, the expectation's gradient)."
    )
    softctx_temperature: float = knob(1.0, help="Softmax temperature of the expected coord embedding and decode (> 0).")
    desc_ce_weight: float = knob(1.0, help="CE weight of GT desc tokens (A) and FN desc tokens (B) (>= 0).")
    bbox_smoothl1_weight: float = knob(0.0, help="SmoothL1 weight on expectation-decoded boxes (>= 0): Channel-A GT boxes, "
                                     "Channel-B matched-prefix and FN boxes.")
    bbox_ciou_weight: float = knob(0.0, help="CIoU weight on expectation-decoded boxes (>= 0; same boxes as SmoothL1).")
    coord_ce_weight: float = knob(0.0, help="Hard CE over the 1000 coord bins at coord slots (>= 0).")
    coord_el1_weight: float = knob(0.0, help="Expected L1 distance to the GT bin (>= 0).")
    coord_ehuber_weight: float = knob(0.0, help="Expected Huber distance to the GT bin (>= 0).")
    coord_huber_delta: float = knob(0.001, help="Huber delta in normalized units (>= 1e-6).")
    coord_entropy_weight: float = knob(0.0, help="Signed weight on the coord distribution entropy (positive sharpens).")
    channel_b: ChannelBConfig = section(ChannelBConfig, help="Channel-B execution.")
