"""The near-duplicate object rule, shared by the ``duplicate_object`` stop rule and ``cut_at_first_duplicate``.

Why one home: the stop rule (``coordexp.core.repeat``) ends a rollout at the object that repeats an
earlier one, and the prefix policy (``coordexp.core.prefix_policy``) later cuts the prefix before
that same object. If the two rules disagreed, the teacher would keep a duplicate the stop rule
fired on, or cut an object generation let through. Both feed the objects of one rollout, in order,
to one ``NearDuplicates``.

An object nearly duplicates an earlier one when their exact IoU is at or above the threshold and,
with ``same_desc``, their normalised descs (``norm_desc``) are equal (seed runbook 000, section 5.5).
"""

from __future__ import annotations

from collections.abc import Sequence

from coordexp.core.geometry import IouMode, Shape, box_pair_iou, iou
from coordexp.core.keys import GeomType


def norm_desc(desc: str) -> str:
    """The desc two objects are compared by: case and surrounding whitespace do not make a new object.

    Evaluation groups predictions by the same key, so "Cat " and "cat" are one category everywhere.
    """
    return desc.strip().lower()


class NearDuplicates:
    """The objects of one rollout seen so far; ``add`` says whether the next one nearly repeats one.

    Two boxes are scored in plain Python (``box_pair_iou``): the stop rule checks each object as it
    closes during generation, and a dense rollout (60 objects) has 1770 pairs.
    """

    __slots__ = ("iou_threshold", "same_desc", "_seen")

    def __init__(self, *, iou_threshold: float, same_desc: bool) -> None:
        self.iou_threshold = iou_threshold
        self.same_desc = same_desc
        # (normalised desc, geometry, norm1000 bins) of every object added
        self._seen: list[tuple[str, GeomType, Sequence[int]]] = []

    def add(self, desc: str, geom_type: GeomType, bins: Sequence[int]) -> bool:
        """Whether this object nearly duplicates an earlier one; it is remembered either way.

        ``bins`` are valid norm1000 bins with ordered box corners (Parse and the stop rule check
        that before), so no clamping is needed.
        """
        key = norm_desc(desc)
        same_desc, threshold, box = self.same_desc, self.iou_threshold, geom_type is GeomType.BBOX
        hit = False
        for other_desc, other_type, other_bins in self._seen:
            if same_desc and other_desc != key:
                continue
            if box and other_type is GeomType.BBOX:
                value = box_pair_iou(bins, other_bins)
            else:
                value = iou(Shape(geom_type, bins), Shape(other_type, other_bins), mode=IouMode.EXACT)
            if value >= threshold:
                hit = True
                break
        self._seen.append((key, geom_type, bins))
        return hit
