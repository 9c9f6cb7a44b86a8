"""The committed tiny tokenizer: rebuild is byte-identical, coords are single tokens, BPE fuses like Qwen."""

from __future__ import annotations

import json

import pytest

from coordexp.core.coords import COORD_TOKENS
from coordexp.data.tiny_tokenizer import write_tokenizer
from coordexp.data.tokenizer import fixture_tokenizer_path, load_token_context, load_tokenizer
from coordexp.errors import TokenizerError

SAMPLE = (
    '{"object_1": {"desc": "say \\"hi\\" café", "bbox_2d": ["<|coord_10|>", "<|coord_20|>", '
    '"<|coord_30|>", "<|coord_40|>"]}, "object_2": {"desc": "dog bed", "poly": [["<|coord_1|>", '
    '"<|coord_2|>"], ["<|coord_3|>", "<|coord_4|>"], ["<|coord_5|>", "<|coord_6|>"]]}}'
)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(fixture_tokenizer_path())


@pytest.fixture(scope="module")
def ctx():
    return load_token_context(fixture_tokenizer_path())


def pieces(tok, text: str) -> list[str]:
    return [tok.decode([i]) for i in tok.encode(text, add_special_tokens=False)]


def test_rebuild_is_byte_identical(tmp_path):
    written = write_tokenizer(tmp_path)
    committed = sorted(p.name for p in fixture_tokenizer_path().iterdir() if p.is_file())
    assert [p.name for p in written] == committed
    for path in written:
        assert path.read_bytes() == (fixture_tokenizer_path() / path.name).read_bytes(), path.name


def test_committed_files_stay_small():
    total = sum(p.stat().st_size for p in fixture_tokenizer_path().iterdir())
    assert total < 1_000_000


@pytest.mark.parametrize("text", ['"]}}', '"]},', '"]}', '"]', "}}", "},", '"]]}}'])
def test_closing_punctuation_fuses_into_one_token(tok, text):
    assert pieces(tok, text) == [text]


def test_coord_tokens_are_single_tokens_inside_json(tok):
    got = pieces(tok, SAMPLE)
    assert got.count("<|coord_10|>") == 1
    assert sum(p in COORD_TOKENS for p in got) == 10
    assert '"]},' in got and '"]]}}' in got


def test_token_context_has_distinct_coord_ids_and_faithful_pieces(ctx):
    assert len(set(ctx.coord_ids)) == 1000
    assert [ctx.coord_id_to_bin[i] for i in ctx.coord_ids] == list(range(1000))
    assert ctx.piece(ctx.im_end_id) == "<|im_end|>"
    ids = ctx.encode(SAMPLE)
    assert ctx.text_of(ids) == SAMPLE
    assert [ctx.coord_id_to_bin[i] for i in ids if ctx.is_coord(i)] == [10, 20, 30, 40, 1, 2, 3, 4, 5, 6]


def test_coords_survive_skip_special_tokens_but_chat_markers_do_not(tok):
    ids = tok.encode("a <|coord_5|> b<|im_end|>", add_special_tokens=False)
    assert tok.decode(ids, skip_special_tokens=True) == "a <|coord_5|> b"


def test_chat_template_renders_chatml(tok):
    messages = [
        {"role": "system", "content": "Detect."},
        {
            "role": "user",
            "content": [{"type": "image", "image": "img.jpg"}, {"type": "text", "text": "List."}],
        },
    ]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nDetect.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>List.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    answer = [*messages, {"role": "assistant", "content": "{}"}]
    full = tok.apply_chat_template(answer, tokenize=False)
    assert full.endswith("<|im_start|>assistant\n{}<|im_end|>\n")


def test_chat_markers_are_single_special_tokens(tok):
    for marker in ("<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|image_pad|>", "<|endoftext|>"):
        assert len(tok.encode(marker, add_special_tokens=False)) == 1
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"


def test_tokenizer_without_coord_vocab_is_rejected_with_the_fix(tmp_path):
    config = json.loads((fixture_tokenizer_path() / "tokenizer.json").read_text(encoding="utf-8"))
    config["added_tokens"] = [t for t in config["added_tokens"] if not t["content"].startswith("<|coord_")]
    (tmp_path / "tokenizer.json").write_text(json.dumps(config), encoding="utf-8")
    for name in ("tokenizer_config.json", "chat_template.jinja"):
        (tmp_path / name).write_bytes((fixture_tokenizer_path() / name).read_bytes())
    with pytest.raises(TokenizerError, match="Expand the vocabulary"):
        load_tokenizer(tmp_path)


def test_missing_directory_is_a_tokenizer_error(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "nope")
