"""The near-duplicate rule (coordexp.core.duplicates): its definition, and that both users apply it alike."""

from __future__ import annotations

import random

import attrs
import pytest

from coordexp.core.coordjson import GeomType, GTObject, serialize
from coordexp.core.duplicates import NearDuplicates, norm_desc
from coordexp.core.geometry import Shape, iou
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import CutReason, apply_prefix_policy
from coordexp.core.repeat import StopRule, StopRules, StopRulesConfig, apply_stop_rules
from coordexp.core.tokens import char_context
from tests.records import policy_cfg

BOX, POLY = GeomType.BBOX, GeomType.POLY
CHAR = char_context()


def hits(objects, *, iou_threshold: float = 0.5, same_desc: bool = True) -> list[bool]:
    seen = NearDuplicates(iou_threshold=iou_threshold, same_desc=same_desc)
    return [seen.add(desc, geom, bins) for desc, geom, bins in objects]


def test_the_threshold_is_inclusive():
    pair = [("cat", BOX, (0, 0, 10, 10)), ("cat", BOX, (0, 0, 10, 5))]  # IoU exactly 0.5
    assert hits(pair, iou_threshold=0.5) == [False, True]
    assert hits(pair, iou_threshold=0.5000001) == [False, False]


def test_descs_compare_by_their_normalised_form_unless_same_desc_is_off():
    assert norm_desc("  Red Car\n") == "red car"
    boxes = [
        ("Cat ", BOX, (100, 100, 200, 200)),
        ("cat", BOX, (101, 100, 201, 200)),
        ("dog", BOX, (100, 100, 200, 200)),
    ]
    assert hits(boxes, iou_threshold=0.9) == [False, True, False]
    assert hits(boxes, iou_threshold=0.9, same_desc=False) == [False, True, True]


def test_a_duplicate_is_remembered_too():
    # the third box overlaps the second (IoU 0.6) but not the first (0.25)
    chain = [("cat", BOX, (0, 0, 100, 100)), ("cat", BOX, (25, 0, 125, 100)), ("cat", BOX, (50, 0, 150, 100))]
    assert hits(chain, iou_threshold=0.6) == [False, True, True]


def test_a_polygon_is_compared_by_its_exact_outline():
    square_poly = (10, 10, 90, 10, 90, 90, 10, 90)
    objects = [
        ("pond", BOX, (10, 10, 90, 90)),
        ("pond", POLY, square_poly),
        ("pond", POLY, (10, 10, 90, 10, 10, 90)),
    ]
    # the square polygon is the box (IoU 1); the triangle is half of it (IoU 0.5)
    assert hits(objects, iou_threshold=0.99) == [False, True, False]
    assert hits(objects, iou_threshold=0.5) == [False, True, True]


def _random_object(rng: random.Random) -> tuple[str, GeomType, tuple[int, ...]]:
    x, y = rng.randrange(0, 40), rng.randrange(0, 40)
    w, h = rng.randrange(0, 30), rng.randrange(0, 30)
    if rng.random() < 0.2:
        return rng.choice(["cat", "Cat", "dog"]), POLY, (x, y, x + w, y, x, y + h + 1)
    return rng.choice(["cat", "Cat", "dog"]), BOX, (x, y, x + w, y + h)


def test_it_equals_the_definition_on_random_objects():
    """Every earlier object, exact geometry IoU at or above the threshold, normalised desc (when asked)."""
    rng = random.Random(7)
    for _ in range(300):
        objects = [_random_object(rng) for _ in range(rng.randint(1, 6))]
        threshold, same_desc = rng.choice([0.3, 0.5, 0.9, 1.0]), rng.random() < 0.5
        expected = [
            any(
                (not same_desc or norm_desc(d) == norm_desc(objects[i][0]))
                and iou(Shape(g, b), Shape(objects[i][1], objects[i][2])) >= threshold
                for d, g, b in objects[:i]
            )
            for i in range(len(objects))
        ]
        assert hits(objects, iou_threshold=threshold, same_desc=same_desc) == expected


STOP = StopRulesConfig(
    enabled=True, min_new_tokens=0, max_consecutive_token_repeats=0, ngram_size=0, ngram_repeats=2,
    max_object_keys=None, duplicate_object=True, duplicate_iou_threshold=0.5, duplicate_same_desc=True,
)  # fmt: skip


def test_the_stop_rule_and_the_prefix_policy_find_the_same_duplicate():
    """On bbox rollouts the stop rule fires on object k exactly when cut_at_first_duplicate cuts before k."""
    rng = random.Random(11)
    fired = 0
    for _ in range(150):
        threshold, same_desc = rng.choice([0.3, 0.5, 0.8]), rng.random() < 0.5
        bases = [(rng.randrange(0, 500), rng.randrange(0, 500)) for _ in range(4)]  # jittered copies overlap
        objs = []
        for i in range(1, 5):
            (x, y), j = rng.choice(bases), rng.randrange(0, 60)
            objs.append(
                GTObject(i, rng.choice(["cat", "Cat ", "dog"]), BOX, (x + j, y, x + 100 + j, y + 100))
            )
        ids = tuple(CHAR.encode(serialize(objs)))
        rules = StopRules(
            attrs.evolve(STOP, duplicate_iou_threshold=threshold, duplicate_same_desc=same_desc), CHAR
        )
        stopped = apply_stop_rules(ids, rules=rules)
        cfg = policy_cfg("cut_at_first_duplicate", duplicate_iou=threshold, same_desc=same_desc)
        view = apply_prefix_policy(parse(Rollout(ids), ctx=CHAR), ctx=CHAR, cfg=cfg)
        if stopped.rule is None:
            assert view.cut.reason is CutReason.NONE
            continue
        fired += 1
        assert stopped.rule is StopRule.DUPLICATE_OBJECT and view.cut.reason is CutReason.DUPLICATE
        kept_by_stop = parse(Rollout(stopped.ids), ctx=CHAR).valid  # up to and including the duplicate
        assert view.parse.valid == kept_by_stop[:-1]
    assert 30 < fired < 120  # the case mix has rollouts with and without a duplicate


@pytest.mark.parametrize("same_desc", [True, False])
def test_the_stop_rule_ignores_descs_only_when_told(same_desc):
    objs = [GTObject(1, "cat", BOX, (100, 100, 200, 200)), GTObject(2, "dog", BOX, (100, 100, 200, 200))]
    rules = StopRules(attrs.evolve(STOP, duplicate_same_desc=same_desc), CHAR)
    out = apply_stop_rules(tuple(CHAR.encode(serialize(objs))), rules=rules)
    assert (out.rule is StopRule.DUPLICATE_OBJECT) is (not same_desc)
