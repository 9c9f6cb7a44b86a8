"""Prefix policy: keep is the identity, cuts land on object boundaries, FN numbering follows the cut."""

from __future__ import annotations

import pytest

from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.prefix_policy import CutReason, apply_prefix_policy
from coordexp.core.tokens import char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context
from coordexp.errors import ConfigError
from tests.records import policy_cfg

CHAR = char_context()


def obj(n: int, desc: str, box: tuple[int, ...]) -> str:
    return f'"object_{n}": {{"desc": "{desc}", "bbox_2d": [' + ", ".join(f'"<|coord_{v}|>"' for v in box) + "]}"


BAD = '"object_2": {"desc": "dog", "bbox_2d": ["<|coord_3|>", "<|coord_3|>", "<|coord_4|>"]}'
ROLLOUT = "{" + ", ".join([obj(1, "cat", (100, 100, 200, 200)), BAD, obj(3, "bird", (600, 600, 700, 700))]) + "}"


def view(text: str, policy: str, ctx=CHAR, **kw):
    parsed = parse(Rollout(tuple(ctx.encode(text))), ctx=ctx)
    return parsed, apply_prefix_policy(parsed, ctx=ctx, cfg=policy_cfg(policy, **kw))


def test_keep_is_the_identity():
    parsed, v = view(ROLLOUT, "keep")
    assert v.parse is parsed and v.cut.reason is CutReason.NONE


@pytest.mark.parametrize("ctx", [CHAR, load_token_context(fixture_tokenizer_path())], ids=["char", "bpe"])
def test_cut_at_first_invalid_ends_after_object_1(ctx):
    parsed, v = view(ROLLOUT, "cut_at_first_invalid", ctx=ctx)
    assert v.parse.prefix_text == "{" + obj(1, "cat", (100, 100, 200, 200))
    assert ctx.text_of(v.parse.prefix_ids) == v.parse.prefix_text
    assert v.parse.prefix_ids[: len(v.parse.prefix_ids) - v.cut.cut_retokenized] == parsed.prefix_ids[: len(v.parse.prefix_ids) - v.cut.cut_retokenized]
    assert v.parse.valid == (1,) and v.parse.max_object_index == 1
    assert (v.cut.reason, v.cut.objects_cut) == (CutReason.INVALID, 2)
    assert v.parse.dropped == parsed.dropped  # the rollout still had its drop (for the multiplier)


def test_cut_at_first_duplicate_and_same_desc_switch():
    text = "{" + ", ".join([obj(1, "Cat ", (100, 100, 200, 200)), obj(2, "cat", (101, 100, 201, 200)), obj(3, "dog", (5, 5, 9, 9))]) + "}"
    _, v = view(text, "cut_at_first_duplicate", duplicate_iou=0.9)
    assert v.parse.valid == (1,) and v.cut.reason is CutReason.DUPLICATE and v.cut.objects_cut == 2
    _, strict = view(text, "cut_at_first_duplicate", duplicate_iou=0.99)
    assert strict.parse.valid == (1, 2, 3) and strict.cut.reason is CutReason.NONE
    other = text.replace('"desc": "cat"', '"desc": "kitten"')
    _, any_desc = view(other, "cut_at_first_duplicate", same_desc=False)
    assert any_desc.parse.valid == (1,)


def test_cut_before_the_first_object_leaves_the_root_brace():
    text = '{"object_1": {"desc": "cat", "bbox_2d": [1, 2, 3, 4]}, ' + obj(2, "dog", (5, 5, 9, 9)) + "}"
    _, v = view(text, "cut_at_first_invalid")
    assert (v.parse.prefix_text, v.parse.valid, v.parse.max_object_index) == ("{", (), None)


def test_bbox_only_hides_polygons_from_matching():
    poly = '"object_2": {"desc": "pond", "poly": [["<|coord_1|>", "<|coord_1|>"], ["<|coord_9|>", "<|coord_1|>"], ["<|coord_9|>", "<|coord_9|>"]]}'
    text = "{" + obj(1, "cat", (1, 2, 3, 4)) + ", " + poly + "}"
    parsed = parse(Rollout(tuple(CHAR.encode(text))), ctx=CHAR)
    v = apply_prefix_policy(parsed, ctx=CHAR, cfg=policy_cfg(), bbox_only=True)
    assert v.parse.valid == (1,) and v.cut.poly_unsupported == 1 and v.parse.prefix_text == parsed.prefix_text


def test_threshold_is_validated():
    with pytest.raises(ConfigError, match="iou_threshold"):
        policy_cfg("cut_at_first_duplicate", duplicate_iou=1.5)

