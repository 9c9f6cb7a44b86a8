"""CoordJSON serialization, SerializeAppend edge cases and desc spans (the data contract: tests/unit/data)."""

from __future__ import annotations

import json
import re

import pytest

from coordexp.core.coordjson import (
    GeomType,
    GTObject,
    Layout,
    append_start_index,
    serialize,
    serialize_append,
)
from coordexp.core.scan import OBJECTS_ARRAY, desc_value_spans, scan
from coordexp.core.text import TokenText
from coordexp.core.tokens import char_context
from coordexp.errors import AppendError


def spans_text(text: str) -> list[str]:
    data = text.encode()
    return [data[s:e].decode() for s, e in desc_value_spans(data)]


def desc_tokens(ctx, text: str) -> tuple[int, ...]:
    t = TokenText.of(ctx.encode(text), ctx)
    return t.overlapping(desc_value_spans(t.data))

PERSON = GTObject(1, "person", GeomType.BBOX, (10, 20, 30, 40))
DOG_BED = GTObject(2, "dog bed", GeomType.POLY, (1, 2, 3, 4, 5, 6))
PERSON_JSON = (
    '{"desc": "person", "bbox_2d": ["<|coord_10|>", "<|coord_20|>", "<|coord_30|>", "<|coord_40|>"]}'
)
DOG_BED_JSON = (
    '{"desc": "dog bed", "poly": [["<|coord_1|>", "<|coord_2|>"], ["<|coord_3|>", "<|coord_4|>"], '
    '["<|coord_5|>", "<|coord_6|>"]]}'
)
OBJ7 = '{"object_7": {"desc": "cat", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}'


# ---- serialize -----------------------------------------------------------------------------------


def test_object_n_layout_matches_the_reference_literal():
    assert serialize([PERSON, DOG_BED]) == f'{{"object_1": {PERSON_JSON}, "object_2": {DOG_BED_JSON}}}'


def test_keys_are_consecutive_positions_not_record_indices():
    text = serialize(
        [GTObject(5, "a", GeomType.BBOX, (1, 2, 3, 4)), GTObject(9, "b", GeomType.BBOX, (1, 2, 3, 4))]
    )
    assert list(json.loads(text)) == ["object_1", "object_2"]


def test_empty_answer_per_layout():
    assert serialize([]) == "{}"
    assert serialize([], layout=Layout.OBJECTS_ARRAY) == '{"objects": []}'


def test_objects_array_round_trips_through_json():
    text = serialize([PERSON, DOG_BED], layout=Layout.OBJECTS_ARRAY)
    assert text == f'{{"objects": [{PERSON_JSON}, {DOG_BED_JSON}]}}'
    back = json.loads(text)["objects"]
    assert back[1]["poly"] == [
        ["<|coord_1|>", "<|coord_2|>"],
        ["<|coord_3|>", "<|coord_4|>"],
        ["<|coord_5|>", "<|coord_6|>"],
    ]
    assert [list(o) for o in back] == [["desc", "bbox_2d"], ["desc", "poly"]]


def test_descs_are_written_in_nfc():
    text = serialize([GTObject(1, "cre\u0300me", GeomType.BBOX, (0, 0, 9, 9))])
    assert "crème" in text and "\u0300" not in text


def test_non_ascii_is_raw_and_quotes_are_escaped():
    text = serialize([GTObject(1, 'say "hi" é', GeomType.BBOX, (0, 0, 999, 999))])
    assert '"desc": "say \\"hi\\" é"' in text
    assert json.loads(text)["object_1"]["desc"] == 'say "hi" é'


# ---- serialize_append ----------------------------------------------------------------------------


def test_append_after_open_brace_has_no_separator():
    text = serialize_append([PERSON, DOG_BED], start_index=1, prefix_text="{")
    assert text == f'"object_1": {PERSON_JSON}, "object_2": {DOG_BED_JSON}}}'


@pytest.mark.parametrize("suffix", ["", "  ", "\n\t "])
def test_append_after_an_entry_leads_with_a_comma(suffix):
    text = serialize_append([PERSON], start_index=8, prefix_text=OBJ7 + suffix)
    assert text == f', "object_8": {PERSON_JSON}}}'
    json.loads(OBJ7 + suffix + text)


def test_append_after_a_trailing_comma_adds_none():
    text = serialize_append([PERSON], start_index=8, prefix_text=OBJ7 + ", ")
    assert text == f'"object_8": {PERSON_JSON}}}'


def test_empty_fn_closes_the_answer():
    assert serialize_append([], start_index=1, prefix_text="{") == "}"
    assert serialize_append([], start_index=8, prefix_text=OBJ7) == "}"
    with pytest.raises(AppendError, match="ends with ',' but FN set is empty"):
        serialize_append([], start_index=8, prefix_text=OBJ7 + ",")


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("", "empty rollout prefix is not append-ready"),
        (" \n", "empty rollout prefix is not append-ready"),
        ('{"object_1": 12', "last_char='2'"),
        ("{}", "must end with an open top-level object"),
        ("}", "missing top-level '{'"),
        ('{"object_1": {"desc": "a}', "ends inside a JSON string"),
        ('{"object_1": {"desc": "a", "bbox_2d": [}', "must end with an open top-level object"),
        ('{"a": 1} {', "must end with an open top-level object"),
        ('{"object_1": {"desc": "x"}', None),
        ('Sure! {"object_1": {"desc": "x"}', None),  # prose before the root is context (Parse keeps it)
        ('```json\n{"object_1": {"desc": "x"}', None),
        ('[ x ] ] {"object_1": {"desc": "x"}', None),  # a preamble's brackets do not count
        ('{"object_1": {"desc": "x"]}', None),  # a stray "]" is ignored, as Parse's scanner does
    ],
)
def test_append_readiness(prefix, message):
    if message is None:
        assert serialize_append([PERSON], start_index=2, prefix_text=prefix).startswith(', "object_2"')
        return
    with pytest.raises(AppendError, match=re.escape(message)):
        serialize_append([PERSON], start_index=1, prefix_text=prefix)


def test_braces_inside_strings_do_not_count():
    prefix = '{"object_1": {"desc": "a } { \\" ]", "bbox_2d": ["<|coord_1|>", "<|coord_2|>", "<|coord_3|>", "<|coord_4|>"]}'
    state = scan(prefix.encode())
    assert state.in_entry_list and not state.in_string and state.root_keys == 1
    json.loads(prefix + serialize_append([PERSON], start_index=2, prefix_text=prefix))


def test_malformed_bbox_is_skipped_without_consuming_an_index():
    broken = GTObject(1, "broken", GeomType.BBOX, (1, 2, 3))
    text = serialize_append([broken, PERSON, DOG_BED], start_index=4, prefix_text="{")
    assert text == f'"object_4": {PERSON_JSON}, "object_5": {DOG_BED_JSON}}}'
    assert serialize_append([broken], start_index=4, prefix_text="{") == "}"


def test_start_index_from_the_prefix_maximum():
    assert append_start_index(None) == 1
    assert append_start_index(7) == 8


def test_objects_array_append_rules():
    arr = Layout.OBJECTS_ARRAY
    assert (
        serialize_append([PERSON], start_index=1, prefix_text='{"objects": [', layout=arr)
        == PERSON_JSON + "]}"
    )
    one = '{"objects": [' + DOG_BED_JSON
    assert serialize_append([PERSON], start_index=1, prefix_text=one, layout=arr) == f", {PERSON_JSON}]}}"
    assert (
        serialize_append([PERSON], start_index=1, prefix_text=one + ", ", layout=arr) == f"{PERSON_JSON}]}}"
    )
    assert serialize_append([], start_index=1, prefix_text=one, layout=arr) == "]}"
    bare = serialize_append([PERSON], start_index=1, prefix_text="{", layout=arr)
    assert json.loads("{" + bare) == {"objects": [json.loads(PERSON_JSON)]}
    with pytest.raises(AppendError, match="ends with ','"):
        serialize_append([], start_index=1, prefix_text=one + ",", layout=arr)
    with pytest.raises(AppendError, match='inside the top-level "objects" array'):
        serialize_append([PERSON], start_index=1, prefix_text='{"other": [', layout=arr)
    with pytest.raises(AppendError, match="inside the top-level"):
        serialize_append([PERSON], start_index=1, prefix_text=OBJ7, layout=arr)


def test_objects_array_counts_only_top_level_items():
    state = scan(('{"objects": [' + DOG_BED_JSON + ", " + PERSON_JSON).encode(), OBJECTS_ARRAY)
    assert state.array_items == 2 and state.in_entry_list


# ---- desc spans ----------------------------------------------------------------------------------


def test_desc_spans_cover_exactly_the_values():
    text = serialize_append([PERSON, DOG_BED], start_index=3, prefix_text=OBJ7)
    assert spans_text(text) == ["person", "dog bed"]


def test_desc_spans_honour_escapes_and_non_ascii():
    text = serialize([GTObject(1, 'say "hi" \\ é', GeomType.BBOX, (1, 2, 3, 4))])
    assert spans_text(text) == ['say \\"hi\\" \\\\ é']


def test_desc_span_of_a_truncated_value_runs_to_the_end():
    assert spans_text('{"object_1": {"desc" : "dog b') == ["dog b"]
    assert desc_value_spans(b'{"desc": ""}') == ((10, 10),)
    assert spans_text('{"object_1": {"desc": "人🐕", "poly": []}') == ["人🐕"]  # byte spans, whole chars


def test_token_overlaps_char_tokenizer_selects_desc_chars_only():
    ctx = char_context()
    text = serialize_append([PERSON, DOG_BED], start_index=3, prefix_text=OBJ7)
    ids = ctx.encode(text)
    assert "".join(ctx.piece(ids[i]) for i in desc_tokens(ctx, text)) == "persondog bed"


def test_token_overlaps_counts_a_token_fused_across_the_quote():
    ctx = char_context(fuse=[' "dog', '",'])
    text = '{"desc": "dog bed", "x": 1}'
    ids = ctx.encode(text)
    picked = [ctx.piece(ids[i]) for i in desc_tokens(ctx, text)]
    # ' "dog' holds desc chars, so it is desc as a whole; '",' holds only the closing quote.
    assert picked == [' "dog', " ", "b", "e", "d"]


def test_empty_desc_overlaps_nothing():
    ctx = char_context()
    text = '{"desc": "", "x": 1}'
    assert desc_tokens(ctx, text) == ()


def test_any_root_entry_requires_the_separator():
    prefix = '{"note": {"desc": "x"}'
    text = serialize_append([PERSON], start_index=1, prefix_text=prefix)
    assert text.startswith(', "object_1"')
    json.loads(prefix + text)


def test_serialize_runner_checks_the_data_contract():
    from coordexp.spec.runners.serialize import run

    ok = run({"objects": [{"desc": "person", "bbox_2d": [10, 20, 30, 40]}]})
    assert ok["text"] == '{"object_1": ' + PERSON_JSON + "}"
    bad = run({"cases": [{"objects": [{"desc": "x", "line": [1, 2]}], "layout": "objects_array"}]})
    assert bad == [{"error": {"type": "DataError", "message": bad[0]["error"]["message"]}}]
    assert "line geometry is not supported" in bad[0]["error"]["message"]
