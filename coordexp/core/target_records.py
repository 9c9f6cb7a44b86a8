"""Records of the BuildTarget transition: its knobs, its per-sample input and the TrainTarget.

Kept apart from ``target.py`` so the learner, the packer and telemetry can import the records
without the construction code, and so each record reads on one screen.

Positions in a TrainTarget are assistant-local token indices: 0 is the first token of ``Y_train``
(the first rollout token kept in the prefix). ``coordexp.core.labels`` shifts them by the prompt
length and by a segment's offset inside a packed row.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping, Sequence

import attrs

from coordexp.core.coordjson import GeomType, GTObject, Layout, gt_object_from_dict
from coordexp.core.ot import check_ot_params
from coordexp.errors import ConfigError, DataError

IGNORE = -100  # label of a position without CE (the torch CrossEntropy ignore index)


class PrefixPolicy(enum.StrEnum):
    """Which part of the rollout prefix the teacher keeps (``rollout_matching.prefix_policy``)."""

    KEEP = "keep"
    CUT_AT_FIRST_INVALID = "cut_at_first_invalid"
    CUT_AT_FIRST_DUPLICATE = "cut_at_first_duplicate"


class CutReason(enum.StrEnum):
    NONE = "none"
    INVALID = "invalid"
    DUPLICATE = "duplicate"


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

    ``drop_invalid_struct_ce_multiplier`` is validated, not clamped: the config schema already
    rejects values outside [1, 4], so a silent clamp here could only hide a bypassed schema.
    """

    ot_cost: str = "l2"
    ot_epsilon: float = 10.0
    ot_iters: int = 30
    # CE on the structure of matched prefix entries (AB 3.3 step 8); desc values and coords excluded.
    matched_prefix_structure_ce: bool = False
    # weight of FN desc value tokens in the tail; 0 masks them (rollout_matching_sft, reference §6.4)
    fn_desc_ce_weight: float = attrs.field(default=0.0, validator=_non_negative)
    # CE on the top-level closing brace and the EOS (AB "closure supervision"; legacy W1 fixed)
    closure_supervision: bool = True
    # weight factor of tail non-desc CE tokens when the parse dropped objects (AB 3.5)
    drop_invalid_struct_ce_multiplier: float = attrs.field(default=1.0, validator=_multiplier)
    # Stage-2 AB v1: GT must be bbox-only and polygon predictions are not matched
    bbox_only: bool = False

    def __attrs_post_init__(self) -> None:
        check_ot_params(self.ot_cost, self.ot_epsilon, self.ot_iters)

    @classmethod
    def rollout_matching(cls, **overrides: object) -> TargetConfig:
        """rollout_matching_sft: tail structure CE only, FN desc masked, closure + EOS supervised."""
        return cls(**overrides)

    @classmethod
    def stage2_ab(cls, desc_ce_weight: float = 1.0, multiplier: float = 1.0, **overrides: object) -> TargetConfig:
        """Stage-2 AB Channel B: matched-prefix structure CE, FN desc CE, closure, drop multiplier."""
        return cls(
            matched_prefix_structure_ce=True,
            fn_desc_ce_weight=desc_ce_weight,
            closure_supervision=True,
            drop_invalid_struct_ce_multiplier=multiplier,
            bbox_only=True,
            **overrides,
        )


def _check_iou(instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 < value <= 1.0):
        raise ConfigError(
            f"rollout_matching.repeat_terminate.duplicate_object.iou_threshold must be in (0, 1], got {value!r}"
        )


@attrs.frozen
class PrefixPolicyConfig:
    """``rollout_matching.prefix_policy`` plus the near-duplicate rule it shares with the stop rule."""

    policy: PrefixPolicy = attrs.field(default=PrefixPolicy.KEEP, converter=PrefixPolicy)
    duplicate_iou: float = attrs.field(default=0.9, validator=_check_iou)
    same_desc: bool = True


KEEP_POLICY = PrefixPolicyConfig()


@attrs.frozen
class TargetSample:
    """One sample's GT as BuildTarget needs it.

    An empty ``gt`` is a normal sample (reference 15.1 W23): every prediction is FP and the append
    is just the closing brace.
    """

    sample_id: str
    gt: tuple[GTObject, ...] = attrs.field(default=(), converter=tuple)  # GT index order
    layout: Layout = Layout.OBJECT_N

    @classmethod
    def from_record(
        cls, record: Mapping[str, object], *, sample_id: str, bbox_only: bool = False, layout: Layout = Layout.OBJECT_N
    ) -> TargetSample:
        """GT from a JSONL-contract record; a missing or null ``objects`` means no GT (not an error)."""
        objects = record.get("objects")
        if objects is None:
            return cls(sample_id, (), layout)
        if not isinstance(objects, list):
            raise DataError(f"sample {sample_id}: 'objects' must be a list, got {type(objects).__name__}")
        if bbox_only:
            return cls(sample_id, gt_bbox_only(objects, sample_id=sample_id), layout)
        where = f"sample {sample_id}"
        return cls(sample_id, tuple(gt_object_from_dict(o, index=i, where=where) for i, o in enumerate(objects, 1)), layout)


_BBOX_ONLY_KEYS = frozenset({"desc", "bbox_2d"})


def gt_bbox_only(objects: Sequence[object], *, sample_id: str) -> tuple[GTObject, ...]:
    """Stage-2 AB v1 GT rule (reference AB §0): every object is a desc plus one valid bbox_2d.

    Any other geometry key (poly, mask_rle, line, ...) is a "bbox-only" error, and a bbox with
    x2 < x1 or y2 < y1 an "invalid bbox_2d" error; both name the sample and the object.
    """
    out = []
    for i, obj in enumerate(objects, start=1):
        at = f"sample {sample_id}: objects[{i - 1}] (object_{i})"
        if not isinstance(obj, Mapping):
            raise DataError(f"{at}: an object must be a JSON object, got {type(obj).__name__}")
        extra = sorted(k for k, v in obj.items() if k not in _BBOX_ONLY_KEYS and v is not None)
        if extra or obj.get("bbox_2d") is None:
            found = ", ".join(extra) if extra else "no bbox_2d"
            raise DataError(f"{at}: Stage-2 AB is bbox-only v1; found {found}. Convert the object to a bbox_2d")
        gt = gt_object_from_dict(obj, index=i, where=f"sample {sample_id}")
        x1, y1, x2, y2 = gt.points
        if x2 < x1 or y2 < y1:
            raise DataError(f"{at}: invalid bbox_2d {list(gt.points)}: needs x1 <= x2 and y1 <= y2")
        out.append(gt)
    return tuple(out)


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
    labels: tuple[int, ...]  # len train_len; token id or IGNORE
    ce_weights: tuple[float, ...]  # len train_len; 0.0 where IGNORE
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


@attrs.frozen
class PrefixCut:
    """What the prefix policy removed (``reason`` none: nothing)."""

    reason: CutReason = CutReason.NONE
    objects_cut: int = 0  # objects (valid or dropped) that left the prefix
    cut_retokenized: int = 0  # tokens re-encoded at the new cut (fused "]}," style tokens)
    poly_unsupported: int = 0  # valid polygons hidden from matching by the bbox-only rule


def geom_value(geom: GeomType | str) -> str:
    """The plain string of a geometry type (records store ``GeomType`` members or their strings)."""
    return str(getattr(geom, "value", geom))
