"""Property tests for Parse (hypothesis, deterministic): it never raises on vocabulary ids, agrees
with a literal byte-by-byte reading of reference §4.3/§4.4/§4.6 (with coordexp's corrections: raw-text
keys, capture of the last geometry array, brackets outside the root ignored, cuts only where the root's
entry list is open, mixed flat/pair lists rejected), keeps its prefix a token prefix of the response,
and leaves JSON that closes cleanly.

The oracle below is deliberately naive (one byte at a time, coord capture checked at every token
start, max index by re-scanning the prefix) so that it checks the fast scanner's shortcuts: regex
events, capture windows found by bisection, max index from marks of the single pass.
"""

from __future__ import annotations

import json
import re

from hypothesis import given, settings
from hypothesis import strategies as st

from coordexp.core.coordjson import Layout
from coordexp.core.parse import parse
from coordexp.core.parse_records import DropReason, Fallback, Rollout
from coordexp.core.tokens import IM_END, char_context

FUSES = ((), ("}}",), ("},", '{"'), ("}}", '"]', "{}"), ('"]}', '"]},', ", "))
CONTEXTS = [char_context(fuse=f) for f in FUSES]
CTX = CONTEXTS[0]
SETTINGS = dict(deadline=None, derandomize=True, database=None)


def _fast_encoder(ctx):
    """Greedy longest-match encoding as one regex (CharTokenizer's loop is too slow for 10k examples)."""
    ids = {ctx.piece(i): i for i in range(ctx.vocab_size)}
    multi = sorted((p for p in ids if len(p) > 1), key=len, reverse=True)
    pattern = re.compile("|".join(map(re.escape, multi)) + "|.", re.S)
    return lambda text: [ids[m] for m in pattern.findall(text)]


ENCODERS = [_fast_encoder(c) for c in CONTEXTS]


def test_fast_encoder_matches_the_char_tokenizer():
    text = '{"object_1": {"desc": "<|coord_5|>é", "bbox_2d": [{}]}},<|im_end|>x<|coord_1000|>'
    for ctx, enc in zip(CONTEXTS, ENCODERS):
        assert enc(text) == ctx.encode(text)

# ---------------------------------------------------------------------------------------------
# The oracle: a literal per-byte reading of the reference (object_n layout), with the corrections.
# ---------------------------------------------------------------------------------------------


def _ids_before(ids, pieces, cut, ctx):
    if cut <= 0:
        return []
    pos = 0
    for i, p in enumerate(pieces):
        if pos + len(p) > cut:
            return list(ids[:i]) + (ctx.encode(p[: cut - pos].decode()) if cut > pos else [])
        pos += len(p)
    return list(ids)


def _oracle_scan(ids, pieces, coord_ids):
    st_ = dict(depth=0, b=0, in_str=False, esc=False, last_key=None, pending=None, cur=None, first=-1,
               roots=0, bounds=[])
    expect, buf, objs, keys, pos = {0: False}, [], [], [], 0
    for ti, (tid, piece) in enumerate(zip(ids, pieces)):
        cur = st_["cur"]
        if cur is not None and cur["cap"] == 1 and tid in coord_ids:
            cur["idx"].append(ti)
        for byte in piece:
            _oracle_char(chr(byte), pos, st_, expect, buf, objs, keys)
            pos += 1
    truncated = st_["depth"] != 0 or st_["b"] != 0 or st_["in_str"]
    return objs, keys, st_["first"], st_["bounds"], truncated


def _oracle_char(ch, pos, s, expect, buf, objs, keys):
    if s["in_str"]:
        if s["esc"]:
            buf.append("\\" + ch)  # keys are read raw: an escape stays two characters
            s["esc"] = False
        elif ch == "\\":
            s["esc"] = True
        elif ch == '"':
            s["in_str"] = False
            text = "".join(buf)
            if expect.get(s["depth"]) and s["b"] == 0:
                s["last_key"] = text
                m = re.fullmatch(r"object_([0-9]+)", text)
                if s["depth"] == 1 and m:
                    s["pending"] = (text, int(m.group(1)))
                    keys.append(int(m.group(1)))
        else:
            buf.append(ch)
    elif ch == '"':
        s["in_str"] = True
        buf.clear()
    elif ch == "{":
        s["depth"] += 1
        expect[s["depth"]] = True
        if s["depth"] == 1:
            s["b"] = 0
            s["roots"] += 1
            if s["first"] < 0:
                s["first"] = pos + 1
        elif s["depth"] == 2:
            s["cur"] = None
            if s["pending"]:
                s["cur"] = dict(key=s["pending"][0], n=s["pending"][1], start=pos, end=-1, cap=0, target=0, idx=[])
                objs.append(s["cur"])
                s["pending"] = s["last_key"] = None
    elif ch == "}":
        if s["depth"] == 2 and s["cur"] is not None:
            s["cur"]["end"] = pos + 1
            if s["roots"] == 1 and s["b"] == 0:
                s["bounds"].append(pos + 1)
            s["cur"] = None
        s["depth"] = max(0, s["depth"] - 1)
    elif ch == "[" and s["depth"]:
        s["b"] += 1
        cur = s["cur"]
        if s["depth"] == 2 and cur and s["last_key"] in ("bbox_2d", "poly") and cur["cap"] != 1:
            cur["cap"], cur["target"], cur["idx"] = 1, s["b"] - 1, []
    elif ch == "]" and s["depth"] and s["b"]:
        s["b"] -= 1
        cur = s["cur"]
        if cur and cur["cap"] == 1 and s["b"] <= cur["target"]:
            cur["cap"] = 2
            s["last_key"] = None
    elif ch in ",:" and s["depth"] >= 1 and s["b"] == 0:
        expect[s["depth"]] = ch == ","


def oracle_reason(value_bytes, idx):
    """§4.5 in order, written independently of coordexp.core.parse."""
    try:
        v = json.loads(value_bytes)
    except ValueError:
        return "key_invalid"
    if not isinstance(v, dict):
        return "key_invalid"
    if not isinstance(v.get("desc"), str) or not v["desc"].strip():
        return "missing_desc"
    try:
        v["desc"].encode()
    except UnicodeEncodeError:
        return "key_invalid"
    rest = set(v) - {"desc"}
    if not rest:
        return "missing_geom"
    if not rest & {"bbox_2d", "poly"}:
        return "unknown_geom"
    if len(rest) > 1:
        return "key_invalid"
    (geom,) = rest
    items = v[geom] if isinstance(v[geom], list) else [{}]
    pairs = [isinstance(x, list) for x in items]
    if (any(pairs) and not all(pairs)) or any(isinstance(x, dict) for x in items):
        return "wrong_arity"
    if any(pairs) and any(len(x) != 2 for x in items):
        return "wrong_arity"
    flat = [y for x in items for y in x] if any(pairs) else items
    if len(flat) % 2:
        return "wrong_arity"
    m = [re.fullmatch(r"<\|coord_(\d{1,4})\|>", x.strip()) if isinstance(x, str) else None for x in flat]
    if not all(m) or any(int(x.group(1)) > 999 for x in m):
        return "non_coord_token"
    if geom == "bbox_2d":
        if len(idx) != 4 or len(flat) != 4:
            return "wrong_arity"
        b = [int(x.group(1)) for x in m]
        return "bbox_invalid" if b[2] < b[0] or b[3] < b[1] else None
    return "wrong_arity" if len(idx) < 6 or len(idx) % 2 or len(idx) != len(flat) else None


def oracle(ids, ctx):
    pieces = [ctx.piece_bytes[i] for i in ids]
    at = b"".join(pieces).find(IM_END.encode())
    if at >= 0:
        ids = _ids_before(ids, pieces, at, ctx)
        pieces = [ctx.piece_bytes[i] for i in ids]
    coord_ids = set(ctx.coord_ids)
    objs, _, first, bounds, truncated = _oracle_scan(ids, pieces, coord_ids)
    if first < 0:
        return dict(ids=ids, prefix=ctx.encode("{"), objs=[], truncated=True, max=None, cut=0)
    cut = bounds[-1] if bounds else first
    prefix = _ids_before(ids, pieces, cut, ctx)
    _, keys, *_ = _oracle_scan(prefix, [ctx.piece_bytes[i] for i in prefix], coord_ids)
    return dict(ids=ids, prefix=prefix, objs=objs, truncated=truncated, max=max(keys, default=None), cut=cut)


def assert_matches_oracle(ids, ctx):
    r = parse(Rollout(tuple(ids)), ctx=ctx)
    o = oracle(list(ids), ctx)
    assert list(r.response_ids) == o["ids"]
    assert list(r.prefix_ids) == o["prefix"]
    assert r.truncated == o["truncated"]
    assert r.max_object_index == o["max"]
    seen = sorted([(v.value_span[0], v.key) for v in r.valid_objects] + [(d.value_span[0], d.key) for d in r.dropped])
    assert seen == [(x["start"], x["key"]) for x in o["objs"]]  # every object seen is valid or dropped
    by_start = {x["start"]: x for x in o["objs"]}
    for v in r.valid_objects:
        assert list(v.coord_token_indices) == by_start[v.value_span[0]]["idx"]
        assert 0 < by_start[v.value_span[0]]["end"] <= o["cut"]
    data = ctx.bytes_of(r.response_ids)
    for d in r.dropped:
        x = by_start[d.value_span[0]]
        if x["end"] < 0 or x["end"] > o["cut"]:
            assert d.reason is DropReason.KEY_INVALID
        else:
            assert d.reason.value == oracle_reason(data[x["start"] : x["end"]], x["idx"])
    for v in r.valid_objects:
        x = by_start[v.value_span[0]]
        assert oracle_reason(data[x["start"] : x["end"]], x["idx"]) is None
    assert sum(r.dropped_by_reason.values()) == r.n_dropped
    return r


def assert_prefix_invariants(r, ctx):
    assert r.prefix_text == ctx.text_of(r.prefix_ids)
    if r.fallback in (Fallback.NONE, Fallback.CUT_RETOKENIZE_FAILED):
        kept = len(r.prefix_ids) - r.cut_retokenized
        assert r.prefix_ids[:kept] == r.response_ids[:kept]
        assert ctx.bytes_of(r.response_ids).startswith(ctx.bytes_of(r.prefix_ids))
    else:
        assert r.truncated and not r.valid_objects
    assert IM_END not in r.response_text


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------

STRUCT = [CTX.encode(c)[0] for c in '{}[]",: \\abo_1'] + [CTX.im_end_id, 5, 7, 999]
token_ids = st.lists(
    st.one_of(st.integers(0, CTX.vocab_size - 1), st.sampled_from(STRUCT), st.sampled_from(STRUCT)), max_size=120
)


def C(k):
    return f'"<|coord_{k}|>"'


coord = st.integers(0, 999)
desc = st.sampled_from(["a", "dog bed", "  cat ", 'say \\"hi\\"', "a } { [", "é", "<|coord_3|> x", " "])
key_n = st.integers(0, 12)


@st.composite
def json_object_entry(draw):
    """One ``"object_N": value`` entry whose text is valid JSON (some invalid as objects)."""
    n, d = draw(key_n), draw(desc)
    kind = draw(st.sampled_from(["bbox", "bbox", "bbox", "poly", "pairs", "arity", "nodesc", "extra", "int", "nondict",
                                 "foo", "mixed", "twice", "escaped"]))
    pts = draw(st.lists(coord, min_size=8, max_size=8))
    box = sorted(pts[:2]) + sorted(pts[2:4]) if draw(st.booleans()) else pts[:4]
    box = [box[0], box[2], box[1], box[3]]
    if kind == "bbox":
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [{", ".join(C(k) for k in box)}]}}'
    if kind in ("poly", "pairs"):
        m = 8 if kind == "poly" else 4
        pairs = ", ".join(f"[{C(pts[i])}, {C(pts[i + 1])}]" for i in range(0, m, 2))
        geom = "poly" if kind == "poly" else "bbox_2d"
        return f'"object_{n}": {{"{geom}": [{pairs}], "desc": "{d}"}}'
    if kind == "arity":
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [{", ".join(C(k) for k in pts[:3])}]}}'
    if kind == "nodesc":
        return f'"object_{n}": {{"bbox_2d": [{", ".join(C(k) for k in box)}]}}'
    if kind == "extra":
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [{", ".join(C(k) for k in box)}], "meta": {{"x": [1]}}}}'
    if kind == "int":
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [1, 2, 3, 4]}}'
    if kind == "nondict":
        return f'"object_{n}": {n}'
    if kind == "mixed":  # flat values and a pair in one list
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [{C(box[0])}, {C(box[1])}, [{C(box[2])}, {C(box[3])}]]}}'
    if kind == "twice":  # the same geometry key twice: json.loads keeps the last array
        first = ", ".join(C(k) for k in pts[4:][: draw(st.integers(2, 4))])
        return f'"object_{n}": {{"desc": "{d}", "bbox_2d": [{first}], "bbox_2d": [{", ".join(C(k) for k in box)}]}}'
    if kind == "escaped":  # not object_N on its raw text
        key = draw(st.sampled_from(["objec\\t_", "object\\u005f"]))
        return f'"{key}{n}": {{"desc": "{d}", "bbox_2d": [{", ".join(C(k) for k in box)}]}}'
    return f'"foo": {{"desc": "{d}", "bbox_2d": [{C(1)}, {C(2)}, {C(3)}, {C(4)}]}}'


broken_entry = st.sampled_from(
    [
        f'"object_2": {{"desc": "u", "bbox_2d": [<|coord_1|>, {C(2)}, {C(3)}, {C(4)}]}}',
        f'"object_3": {{"desc": "t", "bbox_2d": [{C(1)}, {C(2)}, {C(3)}, {C(4)}],}}',
        '"object_4": {"desc": "x", "bbox_2d": [',
        f'"\\object_5": {{"desc": "e", "bbox_2d": [{C(1)}, {C(2)}, {C(3)}, {C(4)}]}}',  # not JSON, not object 5
        f'"object_6": {{"desc": "o", "bbox_2d": [{C(1)}, {C(2)}, {C(3)}, {C(4)}}}',  # its "[" never closes
        "}",
        "]",
        '"',
    ]
)


@st.composite
def rollout_text(draw, broken: bool = True):
    entries = draw(st.lists(st.one_of(json_object_entry(), broken_entry) if broken else json_object_entry(), max_size=6))
    lead = draw(st.sampled_from(["", "", "", "Sure! ", "```json\n", "[ ", "] } "])) if broken else ""
    tail = draw(st.sampled_from(["", " {}", ",", " {" + C(1) + "}", ' {"object_9": {"desc": "z", "poly": []}}']))
    text = lead + "{" + ", ".join(entries) + "}" + (tail if broken else "")
    text = text[: draw(st.integers(0, len(text)))] if draw(st.booleans()) else text
    if broken and draw(st.booleans()):
        at = draw(st.integers(0, len(text)))
        text = text[:at] + IM_END + text[at:]
    return text


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@settings(max_examples=3000, **SETTINGS)
@given(token_ids)
def test_random_ids_never_raise_and_agree_with_the_oracle(ids):
    r = assert_matches_oracle(ids, CTX)
    assert_prefix_invariants(r, CTX)


@settings(max_examples=2500, **SETTINGS)
@given(rollout_text(), st.sampled_from(range(len(CONTEXTS))))
def test_structured_rollouts_agree_with_the_oracle(text, which):
    ctx = CONTEXTS[which]
    r = assert_matches_oracle(ENCODERS[which](text), ctx)
    assert_prefix_invariants(r, ctx)


@settings(max_examples=1200, **SETTINGS)
@given(rollout_text(broken=False), st.sampled_from(range(len(CONTEXTS))))
def test_prefix_closes_to_valid_json(text, which):
    ctx = CONTEXTS[which]
    r = parse(Rollout(tuple(ENCODERS[which](text))), ctx=ctx)
    assert_prefix_invariants(r, ctx)
    if r.valid_objects:
        closed = json.loads(r.prefix_text + "}")
        assert all(o.key in closed for o in r.valid_objects)


@st.composite
def array_text(draw):
    entries = []
    for _ in range(draw(st.integers(0, 5))):
        pts = draw(st.lists(coord, min_size=4, max_size=4))
        entries.append(f'{{"desc": "{draw(desc)}", "bbox_2d": [{", ".join(C(k) for k in pts)}]}}')
    text = '{"objects": [' + ", ".join(entries) + "]}"
    return text[: draw(st.integers(0, len(text)))] if draw(st.booleans()) else text


@settings(max_examples=800, **SETTINGS)
@given(array_text(), st.sampled_from(range(len(CONTEXTS))))
def test_objects_array_prefix_closes_to_valid_json(text, which):
    ctx = CONTEXTS[which]
    r = parse(Rollout(tuple(ENCODERS[which](text))), ctx=ctx, layout=Layout.OBJECTS_ARRAY)
    assert_prefix_invariants(r, ctx)
    seen = sorted([o.index for o in r.valid_objects] + [d.index for d in r.dropped])
    assert seen == list(range(1, len(seen) + 1))  # numbered by array position, none skipped
    if r.fallback is Fallback.NONE:
        closed = json.loads(r.prefix_text + "]}")
        assert len(closed["objects"]) == len(r.valid) + sum(
            1 for d in r.dropped if d.reason is not DropReason.KEY_INVALID
        )
