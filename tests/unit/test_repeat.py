"""Stop rules (coordexp.core.repeat): each rule, incremental == recomputed from scratch, exactly K objects."""

from __future__ import annotations

import random
import re

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson import GeomType, GTObject, serialize
from coordexp.core.geometry import Shape, iou
from coordexp.core.parse import parse
from coordexp.core.parse_records import Rollout
from coordexp.core.repeat import (
    StopBatch,
    StopRule,
    StopRules,
    StopRulesConfig,
    apply_stop_rules,
    stop_metrics,
)
from coordexp.core.scan import scan
from coordexp.core.tokens import char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context

CHAR = char_context()
BPE = load_token_context(fixture_tokenizer_path())
OFF = StopRulesConfig(
    enabled=True, min_new_tokens=0, max_consecutive_token_repeats=0, ngram_size=0, ngram_repeats=2,
    max_object_keys=None, duplicate_object=False, duplicate_iou_threshold=0.9, duplicate_same_desc=True,
)  # fmt: skip


def rules(ctx=CHAR, **kw) -> StopRules:
    return StopRules(attrs.evolve(OFF, **kw), ctx)


def first_fire(r: StopRules, ids) -> tuple[StopRule, int] | None:
    out = apply_stop_rules(ids, rules=r)
    return None if out.decision is None else (out.decision.rule, out.decision.at)


def objects_text(objs) -> str:
    return serialize([GTObject(i, d, GeomType.BBOX, b) for i, (d, b) in enumerate(objs, start=1)])


FIVE = [("cat", (10 * i, 10, 10 * i + 5, 20)) for i in range(1, 6)]


# ---------------------------------------------------------------------------------------------
# token rules


def test_consecutive_and_ngram_rules_fire_on_the_catalogue_sequences():
    r = rules(max_consecutive_token_repeats=4, ngram_size=2, ngram_repeats=3)
    assert first_fire(r, [1, 2, 9, 9, 9, 9]) == (StopRule.CONSECUTIVE_REPEAT, 5)
    assert first_fire(r, [5, 7, 8, 7, 8, 7, 8]) == (StopRule.NGRAM_REPEAT, 6)
    assert first_fire(r, [1, 9, 9, 9]) is None
    assert first_fire(r, [5, 7, 8, 7, 8, 7, 9]) is None


def test_min_new_tokens_holds_token_rules_back_until_the_nth_token():
    r = rules(min_new_tokens=8, max_consecutive_token_repeats=4)
    assert first_fire(r, [9] * 7) is None
    assert first_fire(r, [9] * 12) == (StopRule.CONSECUTIVE_REPEAT, 7)


def test_only_generated_tokens_count_and_disabled_rules_never_fire():
    state = rules(max_consecutive_token_repeats=3).start()  # a state never sees the prompt [.., 9, 9]
    assert [state.advance(9) for _ in range(2)] == [None, None]
    assert state.advance(9).rule is StopRule.CONSECUTIVE_REPEAT
    assert first_fire(rules(), [9] * 50) is None
    off = StopRules(attrs.evolve(OFF, enabled=False, max_consecutive_token_repeats=2, max_object_keys=1), CHAR)
    assert not off.cfg.active and first_fire(off, CHAR.encode(objects_text(FIVE)) + [9] * 5) is None


def _brute_token_rule(ids: list[int], cfg: StopRulesConfig) -> tuple[StopRule, int] | None:
    """Recompute each prefix from scratch: the definition, not the incremental bookkeeping."""
    for n in range(1, len(ids) + 1):
        g = ids[:n]
        if n < cfg.min_new_tokens:
            continue
        r = cfg.max_consecutive_token_repeats
        if r > 0 and n >= r and len(set(g[-r:])) == 1:
            return StopRule.CONSECUTIVE_REPEAT, n - 1
        m, k = cfg.ngram_size, cfg.ngram_repeats
        if m > 0 and n >= m * k and all(g[n - m * j - m : n - m * j] == g[-m:] for j in range(k)):
            return StopRule.NGRAM_REPEAT, n - 1
    return None


@settings(max_examples=300, deadline=None)
@given(
    ids=st.lists(st.integers(0, 3), max_size=40),
    r=st.integers(0, 4),
    m=st.integers(0, 3),
    k=st.integers(2, 4),
    min_new=st.integers(0, 10),
)
def test_token_rules_incremental_equal_recomputation(ids, r, m, k, min_new):
    cfg = attrs.evolve(OFF, min_new_tokens=min_new, max_consecutive_token_repeats=r, ngram_size=m, ngram_repeats=k)
    assert first_fire(StopRules(cfg, CHAR), ids) == _brute_token_rule(ids, cfg)


# ---------------------------------------------------------------------------------------------
# max_object_keys: exactly K complete objects


@pytest.mark.parametrize("ctx", [CHAR, BPE], ids=["char", "bpe"])
@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_a_cap_of_k_keeps_exactly_k_objects_and_is_not_truncated(ctx, k):
    ids = ctx.encode(objects_text(FIVE)) + [ctx.im_end_id]
    out = apply_stop_rules(ids, rules=rules(ctx, max_object_keys=k))
    assert out.rule is StopRule.MAX_OBJECT_KEYS
    text = ctx.text_of(out.ids)
    assert text.endswith(', "object_"}<|im_end|>'), text[-40:]
    fired_on = ctx.text_of(out.ids[: out.decision.at + 1])
    assert fired_on.endswith('"object_') and fired_on.count('"object_') == k + 1
    parsed = parse(Rollout(out.ids), ctx=ctx)
    assert parsed.valid == tuple(range(1, k + 1))
    assert not parsed.dropped and not parsed.truncated
    assert parsed.prefix_text.endswith("]}") and parsed.max_object_index == k


@pytest.mark.parametrize("ctx", [CHAR, BPE], ids=["char", "bpe"])
def test_a_rollout_within_the_cap_never_fires(ctx):
    for n in (0, 2, 3):
        ids = ctx.encode(objects_text(FIVE[:n])) + [ctx.im_end_id]
        assert apply_stop_rules(ids, rules=rules(ctx, max_object_keys=3)).decision is None


def test_the_cap_counts_complete_objects_not_key_strings():
    # object_2's value is not a dict: it is no complete object, so the cap of 2 waits for object_4
    text = '{"object_1": {"desc": "a"}, "object_2": 5, "object_3": {"desc": "b"}, "object_4": {"desc": "c"}}'
    out = apply_stop_rules(CHAR.encode(text), rules=rules(max_object_keys=2))
    assert CHAR.text_of(out.ids[: out.decision.at + 1]).endswith('"object_3": {"desc": "b"}, "object_')


def test_a_key_that_arrives_whole_in_one_token_fires_too():
    ctx = char_context(fuse=(', "object_3": {',))
    text = '{"object_1": {"desc": "a"}, "object_2": {"desc": "b"}, "object_3": {"desc": "c"}}'
    out = apply_stop_rules(ctx.encode(text), rules=rules(ctx, max_object_keys=2))
    assert out.rule is StopRule.MAX_OBJECT_KEYS
    assert ctx.text_of(out.ids).endswith('"object_3": {}}<|im_end|>')  # closes what is open


# ---------------------------------------------------------------------------------------------
# duplicate_object


def test_same_desc_and_overlapping_box_fires_when_the_duplicate_closes():
    text = objects_text([("flagpole", (100, 100, 200, 200)), ("Flagpole ", (101, 100, 201, 200)), ("x", (0, 0, 9, 9))])
    out = apply_stop_rules(CHAR.encode(text), rules=rules(duplicate_object=True))
    assert out.rule is StopRule.DUPLICATE_OBJECT
    assert CHAR.text_of(out.ids[: out.decision.at + 1]).endswith('"<|coord_200|>"]}')
    assert CHAR.text_of(out.ids).endswith('"<|coord_200|>"]}}<|im_end|>')
    assert parse(Rollout(out.ids), ctx=CHAR).valid == (1, 2)


@pytest.mark.parametrize(
    "second", [("pole", (101, 100, 201, 200)), ("flagpole", (150, 100, 250, 200))], ids=["other-desc", "far-box"]
)
def test_other_desc_or_low_iou_does_not_fire(second):
    text = objects_text([("flagpole", (100, 100, 200, 200)), second])
    assert apply_stop_rules(CHAR.encode(text), rules=rules(duplicate_object=True, duplicate_iou_threshold=0.9)).decision is None


def test_same_desc_false_compares_boxes_only():
    text = objects_text([("flagpole", (100, 100, 200, 200)), ("pole", (101, 100, 201, 200))])
    r = rules(duplicate_object=True, duplicate_same_desc=False)
    assert apply_stop_rules(CHAR.encode(text), rules=r).rule is StopRule.DUPLICATE_OBJECT


def test_a_non_ascii_desc_split_across_byte_tokens_is_compared_whole():
    text = objects_text([("猫 é", (100, 100, 200, 200)), ("猫 É", (100, 100, 200, 201))])
    ids = BPE.encode(text)
    assert any(len(BPE.piece_bytes[i]) and BPE.piece_bytes[i][0] >= 0x80 for i in ids)
    assert apply_stop_rules(ids, rules=rules(BPE, duplicate_object=True)).rule is StopRule.DUPLICATE_OBJECT


# ---------------------------------------------------------------------------------------------
# incremental object rules == recomputed from the whole prefix


def _brute_object_rule(ctx, ids, cfg) -> tuple[StopRule, int] | None:
    """Each prefix scanned from scratch with ``scan``; object values read with a plain regex."""
    closed_before = 0
    for n in range(1, len(ids) + 1):
        data = ctx.bytes_of(ids[:n])
        sc = scan(data)
        closed = [o for o in sc.objects if o.end >= 0]
        if cfg.duplicate_object and len(closed) > closed_before:
            boxes = [_box(data[o.start : o.end]) for o in closed]
            last = boxes[-1]
            if last is not None and any(
                b is not None and (not cfg.duplicate_same_desc or b[0] == last[0])
                and iou(Shape("bbox_2d", b[1]), Shape("bbox_2d", last[1])) >= cfg.duplicate_iou_threshold
                for b in boxes[:-1]
            ):
                return StopRule.DUPLICATE_OBJECT, n - 1
        closed_before = len(closed)
        k = cfg.max_object_keys
        if k is not None and len(closed) >= k and re.match(rb'\s*,\s*"object_', data[closed[k - 1].end :]):
            return StopRule.MAX_OBJECT_KEYS, n - 1
    return None


def _box(value: bytes):
    m = re.fullmatch(rb'\{"desc": "([^"]*)", "bbox_2d": \["<\|coord_(\d+)\|>", "<\|coord_(\d+)\|>", '
                     rb'"<\|coord_(\d+)\|>", "<\|coord_(\d+)\|>"\]\}', value)  # fmt: skip
    if m is None:
        return None
    return m.group(1).decode().strip().lower(), tuple(int(g) for g in m.groups()[1:])


def _random_rollout(rng: random.Random) -> str:
    descs = ["cat", "Cat ", "dog", "red car"]
    objs, boxes = [], []
    for _ in range(rng.randint(0, 7)):
        if boxes and rng.random() < 0.3:
            x1, y1, x2, y2 = rng.choice(boxes)
            box = (x1 + rng.randint(0, 3), y1, x2 + rng.randint(0, 3), y2)
        else:
            x1, y1 = rng.randint(0, 900), rng.randint(0, 900)
            box = (x1, y1, x1 + rng.randint(0, 99), y1 + rng.randint(0, 99))
        boxes.append(box)
        objs.append((rng.choice(descs), box))
    text = objects_text(objs)
    return text[: rng.randint(len(text) // 2, len(text))] if rng.random() < 0.3 else text


@pytest.mark.parametrize("ctx", [CHAR, BPE], ids=["char", "bpe"])
def test_object_rules_incremental_equal_recomputation(ctx):
    rng = random.Random(7)
    for _ in range(40):
        ids = ctx.encode(_random_rollout(rng))
        cap = rng.choice([None, 1, 2, 3, 5])
        cfg = attrs.evolve(OFF, max_object_keys=cap, duplicate_object=rng.random() < 0.7,
                           duplicate_iou_threshold=rng.choice([0.5, 0.9]), duplicate_same_desc=rng.random() < 0.7)  # fmt: skip
        assert first_fire(StopRules(cfg, ctx), ids) == _brute_object_rule(ctx, ids, cfg), ctx.text_of(ids)


# ---------------------------------------------------------------------------------------------
# batches, forcing, final cut, metrics


def test_one_row_stopping_never_stops_the_others():
    r = rules(max_consecutive_token_repeats=3)
    batch = StopBatch(r, 3)
    eos = CHAR.im_end_id
    steps = [[9, 1, 4], [9, 2, 4], [9, 3, 4], [eos, 4, 4], [0, 5, 4]]
    forced = [batch.step(col) for col in steps]
    assert forced == [[None] * 3, [None] * 3, [eos, None, eos], [None, None, None], [None, None, None]]
    assert [s.decision.rule if s.decision else None for s in batch.states] == [
        StopRule.CONSECUTIVE_REPEAT, None, StopRule.CONSECUTIVE_REPEAT
    ]
    assert batch.states[0].finished and not batch.states[1].finished


def test_the_state_asks_for_each_forced_id_in_turn_then_nothing():
    r = rules(max_object_keys=1)
    state = r.start()
    text = objects_text(FIVE)
    decisions = [state.advance(t) for t in CHAR.encode(text[: text.index('"object_2') + len('"object_')])]
    assert decisions[-1] is not None and not any(decisions[:-1])
    emitted = []
    while (tok := state.next_forced()) is not None:
        emitted.append(tok)
        state.advance(tok)
    assert CHAR.text_of(emitted) == '"}<|im_end|>' and state.finished


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_the_final_cut_is_idempotent(seed):
    rng = random.Random(seed)
    ids = CHAR.encode(_random_rollout(rng)) + [9] * rng.randint(0, 6)
    r = rules(max_object_keys=rng.choice([None, 1, 2]), duplicate_object=True, max_consecutive_token_repeats=4)
    once = apply_stop_rules(ids, rules=r)
    again = apply_stop_rules(once.ids, rules=r)
    assert again.ids == once.ids and again.decision == once.decision


def test_nothing_after_an_eos_is_looked_at():
    ids = [1, CHAR.im_end_id, 9, 9, 9, 9]
    out = apply_stop_rules(ids, rules=rules(max_consecutive_token_repeats=2))
    assert out.decision is None and out.ids == tuple(ids)


def test_stop_metrics_count_triggered_sequences_and_every_rule():
    m = stop_metrics([StopRule.NGRAM_REPEAT, None, "max_object_keys", StopRule.NGRAM_REPEAT])
    assert m["rollout/repeat_terminate_triggered_sequences"] == 3.0
    assert m["rollout/stop_rule/ngram_repeat"] == 2.0 and m["rollout/stop_rule/max_object_keys"] == 1.0
    assert m["rollout/stop_rule/consecutive_repeat"] == 0.0 and m["rollout/stop_rule/duplicate_object"] == 0.0


@settings(max_examples=300, deadline=None)
@given(a=st.tuples(*[st.integers(0, 30)] * 4), b=st.tuples(*[st.integers(0, 30)] * 4))
def test_the_pairwise_box_iou_is_the_exact_iou_of_geometry(a, b):
    from coordexp.core.geometry import box_pair_iou

    a = (min(a[0], a[2]), min(a[1], a[3]), max(a[0], a[2]), max(a[1], a[3]))
    b = (min(b[0], b[2]), min(b[1], b[3]), max(b[0], b[2]), max(b[1], b[3]))
    assert box_pair_iou(a, b) == pytest.approx(iou(Shape("bbox_2d", a), Shape("bbox_2d", b)), abs=1e-12)


def test_an_id_past_the_tokenizer_is_skipped_not_a_crash():
    """A model's embedding table can be larger than its tokenizer; such an id has no text for the rules."""
    ids = CHAR.encode(objects_text(FIVE[:2])[:-1]) + [CHAR.vocab_size + 5] + CHAR.encode(', "object_3": {}}')
    out = apply_stop_rules(ids, rules=rules(max_object_keys=2))
    assert out.rule is StopRule.MAX_OBJECT_KEYS
