"""Which coord slots of a teacher-forced answer form one box (the geometry losses' groups).

The AB geometry terms (SmoothL1, CIoU on expectation-decoded boxes) read four coord slots as one box, so a
segment must say which four. The answer itself says it: every valid ``bbox_2d`` object of ``Y_train`` is a
box. It is found with the strict parser (``coordexp.core.parse``), the same rule that reads rollouts, so a
box here is exactly a box the parser would accept; nothing re-implements the JSON scan.

A box counts only when its four coord tokens are all supervised coord slots: FP and dropped prefix objects
have no slots and get no geometry (AB 3.5), matched prefix objects and the appended FN (or, on Channel A,
GT) objects have all four. Polygons are not boxes. A box whose slots are only partly supervised would mean
the target and the answer disagree, which is a bug upstream, so it raises instead of being skipped.
"""

from __future__ import annotations

from collections.abc import Sequence

from coordexp.core.keys import GeomType, Layout
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.tokens import TokenContext
from coordexp.errors import TargetError

BoxSlots = tuple[int, int, int, int]  # indices into the segment's coord slot list, x1 y1 x2 y2 order


def box_slot_groups(
    answer_ids: Sequence[int],
    slot_positions: Sequence[int],
    *,
    ctx: TokenContext,
    layout: Layout = Layout.OBJECT_N,
    sample_id: str | None = None,
) -> tuple[BoxSlots, ...]:
    """The boxes of ``answer_ids`` (assistant-local), each as 4 indices into ``slot_positions``.

    ``slot_positions`` are the assistant-local token positions of the supervised coord slots, in the order
    the segment stores them. Boxes come in answer order.
    """
    slot_of = {p: i for i, p in enumerate(slot_positions)}
    if not slot_of:
        return ()
    parsed = parse(Rollout(tuple(answer_ids), sample_id=sample_id), ctx=ctx, layout=layout)
    boxes: list[BoxSlots] = []
    for obj in parsed.valid_objects:
        if obj.geom_type is not GeomType.BBOX or len(obj.coord_token_indices) != 4:
            continue
        found = [slot_of.get(p) for p in obj.coord_token_indices]
        if all(i is None for i in found):
            continue  # FP / unsupervised prefix object: context only
        if any(i is None for i in found):
            raise TargetError(
                f"sample {sample_id}: object {obj.key} has coord slots at only some of its 4 coord tokens "
                f"(positions {obj.coord_token_indices}); the target's coord slots and its answer disagree"
            )
        boxes.append((found[0], found[1], found[2], found[3]))
    return tuple(boxes)
