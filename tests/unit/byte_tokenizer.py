"""A hand-made byte-level BPE tokenizer whose tokens cross character boundaries, built offline.

Qwen's tokenizer is byte-level BPE: a CJK character or an emoji is several tokens, and a merge may
join the last byte of a character with the quote and brace after it. The fixture tokenizer is trained
with Qwen's pre-tokenizer, which keeps letters and punctuation apart, so it never makes such a token.
This one has no pre-tokenizer split, and its merges are chosen to make exactly the hard tokens:

- ``\\x95"}`` and ``\\x95"}}`` (the last byte of 🐕 fused with the closing quote and braces), so an
  object value can close inside a token that starts in the middle of a character;
- ``\\xba\\xba`` (the two trailing bytes of 人), ``\\xa9"`` (é's last byte and a quote), ``\\x94 `` (—'s
  last byte and a space), ``\\xb0"`` (°), ``\\xb1"`` (ñ);
- the structure fusions Qwen makes (``"]},``, ``}}``, ``{"``, ``", "``).
"""

from __future__ import annotations

import functools

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from coordexp.core.coords import COORD_TOKENS
from coordexp.core.tokens import ENDOFTEXT, IM_END, IM_START, TokenContext, byte_level_alphabet

# byte-level merges, written as byte strings; each is built from two existing tokens, left to right
_MERGES: tuple[tuple[bytes, bytes], ...] = (
    (b'"', b"}"), (b'"', b"]"), (b'"]', b"}"), (b'"]}', b","), (b"}", b"}"), (b"}", b","), (b"{", b'"'),
    (b'"', b","), (b'",', b" "), (b'", ', b'"'), (b'"', b":"), (b'":', b" "), (b'": ', b'"'),
    (b"\x95", b'"}'), (b'\x95"}', b"}"), (b"\x95", b" "),
    (b"\xba", b"\xba"), (b"\xba\xba", b'"'),
    (b"\xa9", b'"'), (b"\x94", b" "), (b"\xb0", b'"'), (b"\xb1", b'"'),
)


def _alphabet() -> dict[int, str]:
    """GPT-2's bytes_to_unicode: every byte as one printable character (the inverse of coordexp's table)."""
    return {b: c for c, b in byte_level_alphabet().items()}


def _spell(data: bytes, alphabet: dict[int, str]) -> str:
    return "".join(alphabet[b] for b in data)


@functools.cache
def byte_split_tokenizer() -> PreTrainedTokenizerFast:
    alphabet = _alphabet()
    vocab = {alphabet[b]: b for b in range(256)}
    merges = []
    for left, right in _MERGES:
        merges.append((_spell(left, alphabet), _spell(right, alphabet)))
        vocab.setdefault(_spell(left + right, alphabet), len(vocab))
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    bpe.decoder = decoders.ByteLevel()
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token=IM_END, unk_token=ENDOFTEXT, pad_token=ENDOFTEXT)
    tok.add_special_tokens({"additional_special_tokens": [IM_START]})
    tok.add_tokens(list(COORD_TOKENS), special_tokens=False)
    return tok


@functools.cache
def byte_split_context() -> TokenContext:
    return TokenContext.from_hf(byte_split_tokenizer(), name="byte-split")
