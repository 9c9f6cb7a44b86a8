"""Records of the BuildTarget transition: its knobs, its per-sample input and the TrainTarget.

Kept apart from ``target.py`` so the learner, the packer and telemetry can import the records
without the construction code, and so each record reads on one screen.

Positions in a TrainTarget are assistant-local token indices: 0 is the first token of ``Y_train``
(the first rollout token kept in the prefix). ``coordexp.core.labels`` shifts them by the prompt
length and by a segment's offset inside a packed row.
"""

from __future__ import annotations

import math

import attrs

from coordexp.core.coordjson import GTObject, Layout
from coordexp.core.ot import check_ot_params
from coordexp.core.prefix_policy import CutReason, PrefixCut, PrefixPolicy, PrefixPolicyConfig
from coordexp.errors import ConfigError

# The prefix policy's records live beside the policy; these names stay importable from here too.
__all__ = [
    "CutReason", "PrefixCut", "PrefixPolicy", "PrefixPolicyConfig", "TargetConfig", "TargetCounters",
    "TargetSample", "TrainTarget",
]


def _multiplier(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and 1.0 <= value <= 4.0):
        raise ConfigError(
            f"stage2_ab.channel_b.drop_invalid_struct_ce_multiplier must be in [1.0, 4.0], got {value!r}"
        )


def _non_negative(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ConfigError(f"stage2_ab.desc_ce_weight must be a finite number >= 0, got {value!r}")


@attrs.frozen
class TargetConfig:
    """Knobs of BuildTarget. Channel-B of Stage-2 AB and rollout_matching_sft differ only here.

    ``coordexp.bind.bind_target`` builds it from the config (the variant rules live there); the record
    carries no defaults. ``drop_invalid_struct_ce_multiplier`` is validated, not clamped: the config schema
    already rejects values outside [1, 4], so a silent clamp here could only hide a bypassed schema.
    """

    ot_cost: str
    ot_epsilon: float
    ot_iters: int
    # CE on the structure of matched prefix entries (AB 3.3 step 8); desc values and coords excluded.
    matched_prefix_structure_ce: bool
    # weight of FN desc value tokens in the tail; 0 masks them (rollout_matching_sft, reference §6.4)
    fn_desc_ce_weight: float = attrs.field(validator=_non_negative)
    # CE on the top-level closing brace and the EOS (AB "closure supervision"; legacy W1 fixed)
    closure_supervision: bool
    # weight factor of tail non-desc CE tokens when the parse dropped objects (AB 3.5)
    drop_invalid_struct_ce_multiplier: float = attrs.field(validator=_multiplier)
    # Stage-2 AB v1: GT must be bbox-only and polygon predictions are not matched
    bbox_only: bool

    def __attrs_post_init__(self) -> None:
        check_ot_params(self.ot_cost, self.ot_epsilon, self.ot_iters)


@attrs.frozen
class TargetSample:
    """One sample's GT as BuildTarget needs it.

    An empty ``gt`` is a normal sample (reference 15.1 W23): every prediction is FP and the append
    is just the closing brace.
    """

    sample_id: str
    gt: tuple[GTObject, ...] = attrs.field(default=(), converter=tuple)  # GT index order
    layout: Layout = Layout.OBJECT_N


@attrs.frozen
class TargetCounters:
    """Per-sample counts for telemetry; names follow the legacy segment meta (reference §12.4)."""

    gt_objects: int
    valid_preds: int
    matched_pairs: int  # Hungarian pairs
    matched_for_supervision: int  # pairs whose coord targets could be built
    excluded_from_supervision: int  # pairs whose targets failed; their GT was appended
    fn_appended: int
    fp: int
    dropped: int  # parse drops + predictions refused by the bbox-only rule
    poly_unsupported: int
    prefix_coord_targets: int
    tail_coord_targets: int
    prefix_struct_ce: int
    tail_ce: int  # tail tokens with CE, closure and EOS included
    tail_ignore_count: int  # tail non-coord tokens without CE (desc values, closure when off)
    drop_multiplier_applied: bool
    prefix_cut_reason: CutReason
    objects_cut: int


@attrs.frozen
class TrainTarget:
    """One sample's teacher-forced target: ``Y_train = prefix + append + EOS`` and its supervision.

    Spans (assistant-local token idx): prefix ``[0, prefix_len)``, tail ``[prefix_len, train_len)``
    where the tail is the append tokens followed by the EOS (``train_len - 1``).
    """

    sample_id: str
    y_train_ids: tuple[int, ...]
    prefix_len: int
    append_len: int
    train_len: int  # prefix_len + append_len + 1 (the EOS)
    prefix_text: str
    append_text: str
    labels: tuple[int, ...]  # len train_len; token id or IGNORE_INDEX (coordexp.core.labels)
    ce_weights: tuple[float, ...]  # len train_len; 0.0 where IGNORE_INDEX
    coord_positions: tuple[int, ...]  # [0, train_len) token idx, ascending
    coord_target_bins: tuple[int, ...]  # norm1000 bins, same order
    coord_is_prefix: tuple[bool, ...]
    tail_desc_positions: tuple[int, ...]  # [0, train_len) token idx of FN desc value tokens
    closure_positions: tuple[int, int]  # token idx of the top-level "}" and of the EOS
    matched_gt_indices: tuple[int, ...]  # 0-based GT idx supervised through a prefix object
    fn_gt_indices: tuple[int, ...]  # 0-based GT idx appended, GT order
    counters: TargetCounters

    @property
    def tail_span(self) -> tuple[int, int]:
        return (self.prefix_len, self.train_len)
