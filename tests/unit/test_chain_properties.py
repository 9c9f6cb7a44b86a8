"""Every rollout yields a target: parse -> prefix policy -> match -> build_target over generated rollouts.

The rollouts are what a drifting model writes (seed runbook 000): prose or a markdown fence before the
answer, a second root object, unbalanced brackets and braces, escaped keys, mixed flat/pair lists, a
geometry key given twice, coord slots holding text, truncation anywhere, ``<|im_end|>`` anywhere, random
token ids; GT descs in CJK, emoji and accents. Three tokenizers: the character-level one of the
scenarios (with fused pieces), the fixture BPE, and a byte-level BPE whose tokens cross character
boundaries (``tests/unit/byte_tokenizer.py``).

For each rollout the chain must not raise, ``Y_train`` must start with the kept prefix ids and end with
the supervised EOS, and parsing ``Y_train`` again must give the kept prefix objects followed by every
FN object exactly once. 10k rollouts run in the default suite, 100k under ``-m slow``.
"""

from __future__ import annotations

import random
import unicodedata

import attrs
import pytest

from coordexp.core.coordjson import GeomType, GTObject, Layout
from coordexp.core.parse import parse
from coordexp.core.parse_records import Fallback, Rollout
from coordexp.core.target_pipeline import TargetTrace, run_target_step
from coordexp.core.target_records import TargetSample
from coordexp.core.text import TokenText
from coordexp.core.tokens import char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context
from tests.records import ab_target, match_cfg, policy_cfg, sft_target
from tests.unit.byte_tokenizer import byte_split_context

ASCII_DESCS = ("cat", "dog bed", "person", "traffic light", " cup ", "a } { [", 'say \\"hi\\"', "<|coord_3|> x")
LATIN_DESCS = ("crème brûlée", "ñandú", "café", "5°")
UNICODE_DESCS = ("人", "🐕 dog", "dog 🐕", "—", "尼斯", "crème brûlée", "e\u0301clair")  # the last is NFD
PREAMBLES = ("", "", "", "", "Sure! ", "```json\n", "Here [ ", "] } x ", '"quoted" ', 'It\'s 5" wide ')
TAILS = ("", "", "}", "}", "}}", "} ", ",}", "} {", '} {"object_9": {"desc": "z", "poly": []}}', "}\n```", "]}")


def _c(k: int) -> str:
    return f'"<|coord_{k}|>"'


def _box(rng: random.Random) -> tuple[int, int, int, int]:
    x, y = rng.randrange(0, 900), rng.randrange(0, 900)
    return x, y, min(999, x + rng.randrange(1, 99)), min(999, y + rng.randrange(1, 99))


def _value(rng: random.Random, desc: str, box: tuple[int, ...]) -> str:
    """One object value, valid or broken in one of the ways models break them."""
    coords = ", ".join(_c(v) for v in box)
    kind = rng.choice(("ok", "ok", "ok", "ok", "geom_first", "pairs", "poly", "mixed", "twice", "arity",
                       "int", "unquoted", "unclosed", "extra_close", "extra_key", "trailing", "nondict"))
    if kind == "ok":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords}]}}'
    if kind == "geom_first":
        return f'{{"bbox_2d": [{coords}], "desc": "{desc}"}}'
    if kind == "pairs":
        return f'{{"desc": "{desc}", "bbox_2d": [[{_c(box[0])}, {_c(box[1])}], [{_c(box[2])}, {_c(box[3])}]]}}'
    if kind == "poly":
        pts = (box[0], box[1], box[2], box[1], box[2], box[3])
        return f'{{"desc": "{desc}", "poly": [' + ", ".join(f"[{_c(pts[i])}, {_c(pts[i + 1])}]" for i in (0, 2, 4)) + "]}"
    if kind == "mixed":
        return f'{{"desc": "{desc}", "bbox_2d": [{_c(box[0])}, {_c(box[1])}, [{_c(box[2])}, {_c(box[3])}]]}}'
    if kind == "twice":
        return f'{{"desc": "{desc}", "bbox_2d": [{_c(box[0])}, {_c(box[1])}], "bbox_2d": [{coords}]}}'
    if kind == "arity":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords[: coords.rfind(",")]}]}}'
    if kind == "int":
        return f'{{"desc": "{desc}", "bbox_2d": [{", ".join(map(str, box))}]}}'
    if kind == "unquoted":
        return f'{{"desc": "{desc}", "bbox_2d": [<|coord_1|>, {coords}]}}'
    if kind == "unclosed":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords}}}'
    if kind == "extra_close":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords}]]}}'
    if kind == "extra_key":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords}], "score": 1}}'
    if kind == "trailing":
        return f'{{"desc": "{desc}", "bbox_2d": [{coords}],}}'
    return str(rng.randrange(100))


def _key(rng: random.Random, n: int) -> str:
    return rng.choice((f'"object_{n}"',) * 8 + (f'"objec\\t_{n}"', f'"\\object_{n}"', '"foo"', f'"object_{n}'))


def rollout_text(rng: random.Random, gt: list[tuple[str, tuple[int, ...]]], descs: tuple[str, ...]) -> str:
    """A rollout that predicts some GT objects (jittered), some FPs, in the object_n layout."""
    preds = [(d, tuple(min(999, max(0, v + rng.randrange(-2, 3))) for v in b)) for d, b in gt if rng.random() < 0.6]
    preds += [(rng.choice(descs), _box(rng)) for _ in range(rng.randrange(3))]
    rng.shuffle(preds)
    entries = [f"{_key(rng, i)}: {_value(rng, d, b)}" for i, (d, b) in enumerate(preds, 1)]
    sep = rng.choice((", ", ", ", ",", " "))
    text = rng.choice(PREAMBLES) + ("{" if rng.random() < 0.95 else "") + sep.join(entries) + rng.choice(TAILS)
    if rng.random() < 0.3:
        text = text[: rng.randrange(len(text) + 1)]
    if rng.random() < 0.15:
        at = rng.randrange(len(text) + 1)
        text = text[:at] + "<|im_end|>" + text[at:]
    return text


def _ids(rng: random.Random, text: str, ctx) -> tuple[int, ...]:
    ids = list(ctx.encode(text))
    if ids and rng.random() < 0.1:  # a token the model should not have produced (stray bytes, specials)
        ids[rng.randrange(len(ids))] = rng.randrange(ctx.vocab_size)
    if ids and rng.random() < 0.1:  # token-level truncation (may end inside a character)
        ids = ids[: rng.randrange(len(ids) + 1)]
    return tuple(ids)


def _kept_objects(trace: TargetTrace, ctx) -> list[tuple]:
    """The original parse's valid objects that lie inside the kept prefix (empty for an opening-text prefix)."""
    view = trace.view.parse
    if view.fallback not in (Fallback.NONE, Fallback.CUT_RETOKENIZE_FAILED) or trace.view.cut.reset:
        return []
    end = len(ctx.bytes_of(view.prefix_ids))
    return [_obj(o) for o in trace.parse.valid_objects if o.value_span[1] <= end]


def _obj(o) -> tuple:
    return (o.desc, GeomType(o.geom_type), o.coord_bins)


def check_chain(trace: TargetTrace, sample: TargetSample, ctx) -> None:
    t, view = trace.target, trace.view.parse
    assert t.y_train_ids[: t.prefix_len] == view.prefix_ids
    assert t.y_train_ids[-1] == ctx.im_end_id and t.labels[-1] == ctx.im_end_id and t.ce_weights[-1] > 0
    again = parse(Rollout(t.y_train_ids), ctx=ctx, layout=sample.layout)
    fn = [(unicodedata.normalize("NFC", g.desc).strip(), g.geom_type, g.points) for g in (sample.gt[i] for i in t.fn_gt_indices)]
    assert [_obj(o) for o in again.valid_objects] == _kept_objects(trace, ctx) + fn
    assert sorted(t.matched_gt_indices + t.fn_gt_indices) == list(range(len(sample.gt)))
    assert TokenText.of(t.y_train_ids[: t.prefix_len], ctx).data == ctx.bytes_of(view.prefix_ids)


def _contexts():
    return {
        "char": (char_context(), ASCII_DESCS + LATIN_DESCS),
        "char-fused": (char_context(fuse=("}}", '"]},', '{"', "},")), ASCII_DESCS + LATIN_DESCS),
        "fixture-bpe": (load_token_context(fixture_tokenizer_path()), ASCII_DESCS + UNICODE_DESCS),
        "byte-split": (byte_split_context(), ASCII_DESCS + UNICODE_DESCS + LATIN_DESCS),
    }


MATCH = match_cfg()
CONFIGS = (  # (BuildTarget switches, prefix policy); closure supervision is on in every variant
    (sft_target(), policy_cfg("keep")),
    (sft_target(), policy_cfg("cut_at_first_invalid")),
    (ab_target(fn_desc_ce_weight=0.5, drop_invalid_struct_ce_multiplier=2.0), policy_cfg("cut_at_first_duplicate")),
    (ab_target(), policy_cfg("cut_at_first_invalid")),
)


def run_chain(n: int, seed: int) -> dict[str, int]:
    """Run ``n`` generated rollouts through the chain; returns how often each Parse fallback occurred."""
    rng = random.Random(seed)
    contexts = _contexts()
    names = sorted(contexts)
    seen: dict[str, int] = {}
    for i in range(n):
        ctx, descs = contexts[names[i % len(names)]]
        target_cfg, policy = CONFIGS[(i // len(names)) % len(CONFIGS)]
        gt = [(rng.choice(descs), _box(rng)) for _ in range(rng.randrange(6))]
        sample = TargetSample(f"r{i}", tuple(GTObject(k, d, GeomType.BBOX, b) for k, (d, b) in enumerate(gt, 1)))
        text = rollout_text(rng, gt, descs)
        ids = _ids(rng, text, ctx)
        trace = run_target_step(Rollout(ids, sample_id=sample.sample_id), sample, ctx=ctx, match_cfg=MATCH,
                                target_cfg=target_cfg, policy_cfg=policy)
        check_chain(trace, sample, ctx)
        key = trace.parse.fallback.value
        seen[key] = seen.get(key, 0) + 1
    return seen


def test_every_rollout_yields_a_target():
    seen = run_chain(10_000, seed=0)
    # the generator reaches the degraded paths too (each is a counted field, never an error)
    assert seen.get("no_open_brace", 0) > 100 and seen["none"] > 8000


@pytest.mark.slow
def test_every_rollout_yields_a_target_100k():
    run_chain(100_000, seed=1)


def test_objects_array_layout_yields_a_target():
    rng = random.Random(3)
    ctx, descs = byte_split_context(), ASCII_DESCS + UNICODE_DESCS
    for i in range(300):
        gt = [(rng.choice(descs), _box(rng)) for _ in range(rng.randrange(4))]
        sample = TargetSample(f"a{i}", tuple(GTObject(k, d, GeomType.BBOX, b) for k, (d, b) in enumerate(gt, 1)),
                              Layout.OBJECTS_ARRAY)
        entries = [_value(rng, d, b) for d, b in gt if rng.random() < 0.5]
        text = rng.choice(PREAMBLES) + '{"objects": [' + ", ".join(entries) + rng.choice(("]}", "", "]} {", "}"))
        text = text[: rng.randrange(len(text) + 1)] if rng.random() < 0.3 else text
        trace = run_target_step(Rollout(tuple(ctx.encode(text))), sample, ctx=ctx, match_cfg=match_cfg(),
                                target_cfg=sft_target(), policy_cfg=policy_cfg(rng.choice(("keep", "cut_at_first_invalid"))))
        check_chain(trace, sample, ctx)


def test_fn_descs_of_any_script_round_trip_through_every_tokenizer():
    for name, (ctx, descs) in _contexts().items():
        gts = tuple(GTObject(k, d, GeomType.BBOX, (k, k, k + 9, k + 9)) for k, d in enumerate(descs, 1))
        sample = TargetSample(name, gts)
        trace = run_target_step(Rollout(tuple(ctx.encode("{"))), sample, ctx=ctx, match_cfg=match_cfg(),
                                target_cfg=sft_target(), policy_cfg=policy_cfg())
        again = parse(Rollout(trace.target.y_train_ids), ctx=ctx)
        assert [o.desc for o in again.valid_objects] == [unicodedata.normalize("NFC", d).strip() for d in descs]
        assert attrs.asdict(trace.target.counters)["fn_appended"] == len(descs)
