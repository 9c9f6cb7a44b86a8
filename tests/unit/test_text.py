"""Byte-exact text: the piece table, merged pieces, the one cut rule, and parse/target on split characters."""

from __future__ import annotations

import random

import pytest

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.core.parse import parse
from coordexp.core.parse_records import ImEndCut, Rollout
from coordexp.core.target_pipeline import run_target_step
from coordexp.core.target_records import TargetSample
from coordexp.core.text import TokenText
from coordexp.core.tokens import CharTokenizer, char_context
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context
from tests.records import match_cfg, policy_cfg, sft_target
from tests.unit.byte_tokenizer import byte_split_context


@pytest.fixture(scope="module")
def split():
    return byte_split_context()


@pytest.fixture(scope="module")
def bpe():
    return load_token_context(fixture_tokenizer_path())


def C(k: int) -> str:
    return f'"<|coord_{k}|>"'


def test_piece_table_holds_bytes_and_text_is_joined_before_decoding(split, bpe):
    for ctx in (split, bpe):
        ids = ctx.encode("人 🐕")
        assert len(ids) > 2  # split into byte tokens
        assert any("\\x" in ctx.piece(i) for i in ids)  # a lone piece is not text, and says so
        assert ctx.text_of(ids) == "人 🐕" and ctx.bytes_of(ids) == "人 🐕".encode()
        assert ctx.piece_bytes[ctx.im_end_id] == b"<|im_end|>"
        assert ctx.piece_bytes[ctx.coord_ids[7]] == b"<|coord_7|>"


def test_merged_pieces_carry_whole_characters(split):
    t = TokenText.of(split.encode('"desc": "dog 🐕"}}'), split)
    texts = t.token_texts()
    assert "".join(texts) == t.text == '"desc": "dog 🐕"}}'
    assert "�" not in "".join(texts) and "" in texts  # the bytes before the last one complete nothing
    assert texts[-1] == '🐕"}}'  # the token completing the character carries all of it


def test_a_cut_inside_a_token_that_starts_mid_character_reencodes_from_the_character(split):
    text = '{"object_1": {"bbox_2d": [' + ", ".join(C(k) for k in (1, 2, 3, 4)) + '], "desc": "dog 🐕"}}'
    t = TokenText.of(split.encode(text), split)
    assert split.piece_bytes[t.ids[-1]] == b'\x95"}}'  # 🐕's last byte fused with the closers
    cut = len(t.data) - 1  # after the object's "}", inside that token
    ids, retok = t.cut(cut, split)
    assert split.bytes_of(ids) == t.data[:cut]
    assert retok == 4 and ids[:-retok] == t.ids[:-4]  # the 3 lead bytes of 🐕 and its tail were re-encoded
    r = parse(Rollout(t.ids), ctx=split)
    assert r.valid == (1,) and r.valid_objects[0].desc == "dog 🐕" and r.cut_retokenized == 4
    assert r.prefix_text == text[:-1]


def test_cut_points_past_the_data_or_at_a_boundary_keep_tokens(split):
    t = TokenText.of(split.encode('{"a": 1}'), split)
    assert t.cut(0, split) == ((), 0) and t.cut(len(t.data), split) == (t.ids, 0)
    assert t.cut(t.starts[2], split) == (t.ids[:2], 0)


def test_overlapping_takes_every_token_touching_a_byte_span(split):
    t = TokenText.of(split.encode('"desc": "人"}'), split)
    start = t.data.index("人".encode())
    picked = t.overlapping([(start, start + 3)])
    assert split.bytes_of([t.ids[i] for i in picked]).startswith("人".encode())
    assert t.overlapping([(4, 4)]) == ()


def test_im_end_after_a_split_character(split):
    ids = split.encode('{"object_1": {"desc": "人", "bbox_2d": [' + ", ".join(C(k) for k in (1, 2, 3, 4)) + "]}}<|im_end|>x")
    r = parse(Rollout(tuple(ids)), ctx=split)
    assert r.im_end is ImEndCut.TOKEN_BOUNDARY and r.valid_objects[0].desc == "人"


def test_truncation_inside_a_character_parses_without_error(split):
    ids = split.encode('{"object_1": {"desc": "dog 🐕')
    for n in range(len(ids) + 1):
        r = parse(Rollout(tuple(ids[:n])), ctx=split)
        assert r.truncated


def test_fn_descs_of_any_script_build_a_target_on_every_byte_level_tokenizer(split, bpe):
    descs = ("人", "🐕 dog", "crème brûlée", "—", "ñ", "5°", "尼斯")
    gts = tuple(GTObject(i, d, GeomType.BBOX, (i, i, i + 10, i + 10)) for i, d in enumerate(descs, 1))
    for ctx in (split, bpe):
        t = run_target_step(Rollout(tuple(ctx.encode("{"))), TargetSample("u", gts), ctx=ctx, match_cfg=match_cfg(),
                            target_cfg=sft_target(), policy_cfg=policy_cfg()).target
        assert all(d in t.append_text for d in descs)
        masked = TokenText.of(t.y_train_ids, ctx)
        desc_bytes = b"".join(ctx.piece_bytes[t.y_train_ids[p]] for p in t.tail_desc_positions)
        for d in descs:
            assert d.encode() in desc_bytes
        assert masked.text.endswith("}<|im_end|>")


def test_char_tokenizer_is_greedy_longest_match():
    rng = random.Random(0)
    for fuse in ((), ("}}",), ("}<|im_end|>",), ("<|im", "<|coord_1", "1|>", '"]},', '"]}')):
        tok = CharTokenizer(fuse)
        multi = sorted((t for t in tok.vocab if len(t) > 1), key=len, reverse=True)
        alphabet = ["{", "}", '"', "]", ",", " ", "<|coord_1|>", "<|coord_12|>", "<|coord_1000|>", "<|im_end|>",
                    "<|im", "|>", "1", "é", "<", "|"]
        for _ in range(150):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(25)))
            want, i = [], 0
            while i < len(text):  # the reference loop: longest multi-character token, else one character
                tok_ = next((m for m in multi if text.startswith(m, i)), text[i])
                want.append(tok.token_to_id(tok_))
                i += len(tok_)
            assert tok.encode_text(text) == want


def test_fragment_memo_returns_the_encoding():
    ctx = char_context(fuse=("}}",))
    assert ctx.encode_fragment("}}") == tuple(ctx.encode("}}")) == ctx.encode_fragment("}}")
