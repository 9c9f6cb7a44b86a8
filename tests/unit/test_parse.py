"""Parse behaviour beyond the catalogue scenarios: degraded paths (W11), im_end inside a token,
the objects_array layout, the fixture BPE tokenizer, and bad input."""

from __future__ import annotations

import json

import attrs
import pytest

from coordexp.core.coordjson import GeomType, GTObject, Layout, serialize
from coordexp.core.parse import parse
from coordexp.core.parse_records import DropReason, Fallback, ImEndCut, Rollout
from coordexp.core.tokens import char_context
from coordexp.errors import TokenizerError

CTX = char_context()


def C(k: int) -> str:
    return f'"<|coord_{k}|>"'


def obj_n(n: int, desc: str = "a", box: tuple[int, int, int, int] = (1, 2, 3, 4)) -> str:
    return f'"object_{n}": {{"desc": "{desc}", "bbox_2d": [{", ".join(C(k) for k in box)}]}}'


def run(text: str, ctx=CTX, encode_with=None, **kw):
    """Parse ``text``; a backend's ids come from the real tokenizer (``encode_with``), not a lossy one."""
    ids = (encode_with or ctx).encode(text)
    return parse(Rollout(tuple(ids)), ctx=ctx, **kw)


def lossy(ctx, bad: str):
    """A context whose encode cannot reproduce ``bad`` exactly (as a normalising tokenizer might)."""
    inner = ctx.encode

    def encode(text: str) -> list[int]:
        return inner(text.replace(bad, "?"))

    return attrs.evolve(ctx, encode=encode)


def test_result_counts_every_reason_and_exposes_indices():
    r = run("{" + obj_n(1) + ', "object_2": {"desc": "b"}}')
    assert r.valid == (1,)
    assert r.n_dropped == 1
    assert set(r.dropped_by_reason) == set(DropReason)
    assert r.dropped_by_reason[DropReason.MISSING_GEOM] == 1
    assert sum(r.dropped_by_reason.values()) == 1


def test_spans_point_at_the_object_value():
    text = "{" + obj_n(1) + ", " + obj_n(2, "b", (5, 6, 7, 8)) + "}"
    r = run(text)
    o = r.valid_objects[1]
    start, end = o.value_span
    assert json.loads(r.response_text[start:end]) == {
        "desc": "b",
        "bbox_2d": ["<|coord_5|>", "<|coord_6|>", "<|coord_7|>", "<|coord_8|>"],
    }
    t0, t1 = o.token_span
    assert CTX.text_of(r.response_ids[t0:t1]) == r.response_text[start:end]  # ASCII: bytes == chars
    assert [r.response_ids[i] for i in o.coord_token_indices] == [5, 6, 7, 8]  # char ids == bins


def test_cut_inside_fused_token_that_does_not_reencode_moves_to_previous_object():
    # Two objects; the second closes inside a fused "}}" whose "}" cannot be re-encoded exactly.
    real = char_context(fuse=["}}"])
    text = "{" + obj_n(1) + ", " + obj_n(2, "b") + "}"
    r = run(text, ctx=lossy(real, "}"), encode_with=real)
    assert r.fallback is Fallback.CUT_RETOKENIZE_FAILED
    assert r.valid == (1,)
    assert [(d.index, d.reason) for d in r.dropped] == [(2, DropReason.KEY_INVALID)]
    assert r.prefix_text == "{" + obj_n(1)
    assert r.prefix_ids == r.response_ids[: len(r.prefix_ids)]
    assert r.max_object_index == 1  # object_2's key lies past the moved cut


def test_cut_that_cannot_move_anywhere_resets_to_the_open_brace():
    # Single object closing inside "}}", and the root "{" fused into '{"': neither cut re-encodes.
    real = char_context(fuse=["}}", '{"'])
    r = run("{" + obj_n(1) + "}", ctx=lossy(lossy(real, "}"), "{"), encode_with=real)
    assert r.fallback is Fallback.CUT_RETOKENIZE_RESET
    assert r.valid == ()
    assert r.dropped_by_reason[DropReason.KEY_INVALID] == 1
    assert r.truncated
    assert r.max_object_index is None
    assert r.prefix_text == "?"  # whatever the layout's opening text encodes to with this tokenizer


def test_im_end_inside_a_token():
    ctx = char_context(fuse=["}<|im_end|>"])
    text = "{" + obj_n(1) + "}<|im_end|>tail"
    r = run(text, ctx=ctx)
    assert r.im_end is ImEndCut.RETOKENIZED and r.im_end_cut
    assert r.response_text == "{" + obj_n(1) + "}"
    assert r.valid == (1,) and not r.truncated

    r = run(text, ctx=lossy(ctx, "}"), encode_with=ctx)
    assert r.im_end is ImEndCut.TOKEN_DROPPED
    assert r.response_text == "{" + obj_n(1)
    assert r.valid == (1,) and r.truncated


def test_im_end_spelled_out_in_ordinary_tokens_is_still_a_hard_stop():
    ids = CTX.encode("{" + obj_n(1) + "}") + [CTX.encode(ch)[0] for ch in "<|im_end|>"] + CTX.encode("x")
    r = parse(Rollout(tuple(ids)), ctx=CTX)
    assert r.im_end is ImEndCut.TOKEN_BOUNDARY
    assert r.response_text.endswith("}") and "<|im_end|>" not in r.response_text


def test_out_of_vocabulary_id_is_a_clear_error():
    with pytest.raises(TokenizerError, match=r"sample s-7.*token id 99999"):
        parse(Rollout((1, 99999), sample_id="s-7"), ctx=CTX)
    with pytest.raises(TokenizerError, match="token id -1"):
        parse(Rollout((-1,)), ctx=CTX)


def test_a_second_root_object_is_scanned_but_never_cut_into():
    r = run("{" + obj_n(1) + "} {" + obj_n(2) + "}")
    assert r.valid == (1,) and r.max_object_index == 1
    assert [(d.index, d.reason) for d in r.dropped] == [(2, DropReason.KEY_INVALID)]
    assert r.prefix_text == "{" + obj_n(1)


# -- objects_array layout ---------------------------------------------------------------------

ARRAY = Layout.OBJECTS_ARRAY


def arr_obj(desc: str = "a", box=(1, 2, 3, 4)) -> str:
    return f'{{"desc": "{desc}", "bbox_2d": [{", ".join(C(k) for k in box)}]}}'


def test_objects_array_objects_are_numbered_by_position():
    text = '{"objects": [' + arr_obj("a") + ", " + arr_obj("b", (4, 3, 2, 1)) + ", " + arr_obj("c") + "]}"
    r = run(text, layout=ARRAY)
    assert r.valid == (1, 3)
    assert [o.key for o in r.valid_objects] == ["objects[0]", "objects[2]"]
    assert [(d.index, d.reason) for d in r.dropped] == [(2, DropReason.BBOX_INVALID)]
    assert r.prefix_text == text[: -len("]}")]
    assert json.loads(r.prefix_text + "]}")["objects"][2]["desc"] == "c"
    assert r.max_object_index == 3 and not r.truncated
    assert r.valid_objects[0].coord_bins == (1, 2, 3, 4)


def test_objects_array_truncated_and_empty():
    r = run('{"objects": [' + arr_obj("a") + ', {"desc": "b", "bbox_2d": [' + C(1), layout=ARRAY)
    assert r.valid == (1,) and r.truncated
    assert r.prefix_text == '{"objects": [' + arr_obj("a")
    assert r.dropped_by_reason[DropReason.KEY_INVALID] == 1

    r = run('{"objects": []}', layout=ARRAY)
    assert r.prefix_text == '{"objects": [' and r.valid == () and r.fallback is Fallback.NONE


def test_objects_array_without_the_array_falls_back_to_its_opening_text():
    r = run("{" + obj_n(1) + "}", layout=ARRAY)
    assert r.fallback is Fallback.NO_OBJECTS_ARRAY
    assert r.prefix_text == '{"objects": [' and r.truncated and r.valid == ()


def test_objects_array_matches_the_serializer_output():
    objs = [GTObject(i, f"thing {i}", GeomType.BBOX, (i, i, i + 5, i + 9)) for i in range(1, 6)]
    r = run(serialize(objs, layout=ARRAY), layout=ARRAY)
    assert r.valid == (1, 2, 3, 4, 5)
    assert [o.coord_bins for o in r.valid_objects] == [o.points for o in objs]


# -- the fixture BPE tokenizer ----------------------------------------------------------------


@pytest.fixture(scope="module")
def bpe():
    tok = pytest.importorskip("coordexp.data.tokenizer")
    return tok.load_token_context(tok.fixture_tokenizer_path())


def test_bpe_dense_rollout_with_fused_closers(bpe):
    objs = [GTObject(i, "traffic light" if i % 2 else "é café", GeomType.BBOX, (i, 2 * i, i + 7, 2 * i + 7)) for i in range(1, 31)]
    text = serialize(objs)
    ids = bpe.encode(text + "<|im_end|>")
    r = parse(Rollout(tuple(ids)), ctx=bpe)
    assert r.valid == tuple(range(1, 31))
    assert [o.desc for o in r.valid_objects[:2]] == ["traffic light", "é café"]
    assert [o.coord_bins for o in r.valid_objects] == [o.points for o in objs]
    assert r.prefix_text == text[:-1]
    kept = len(r.prefix_ids) - r.cut_retokenized
    assert r.prefix_ids[:kept] == r.response_ids[:kept]
    assert not r.truncated and r.im_end is ImEndCut.TOKEN_BOUNDARY


def test_bpe_truncated_rollout(bpe):
    objs = [GTObject(i, "cup", GeomType.BBOX, (1, 2, 3, 4)) for i in range(1, 4)]
    text = serialize(objs)
    cut_at = text.index('"object_3"') + 25
    r = parse(Rollout(tuple(bpe.encode(text[:cut_at]))), ctx=bpe)
    assert r.valid == (1, 2) and r.truncated
    assert json.loads(r.prefix_text + "}") == json.loads(serialize(objs[:2]))
