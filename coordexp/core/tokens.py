"""What the pure core needs to know about a tokenizer, computed once.

``TokenContext`` holds a piece table (the decoded text of every vocab id, decoded one id at a time),
the coord-id -> bin map and the ids of the chat markers. Parsing works on token ids and this table
only: no transition decodes a whole sequence and re-encodes it, so the kept prefix is never changed
by a decode/encode round trip.

Two tokenizers plug in:
- any HF tokenizer (the fixture BPE tokenizer, a real Qwen3-VL checkpoint) via ``from_hf``;
- ``CharTokenizer``, the character-level tokenizer the reference scenarios are written against
  (ids 0..999 are the coord bins, every other character is one token).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from coordexp.core.coords import COORD_TOKENS, validate_coord_ids
from coordexp.errors import TokenizerError

IM_END = "<|im_end|>"
IM_START = "<|im_start|>"
ENDOFTEXT = "<|endoftext|>"


class TextTokenizer(Protocol):
    """The two calls the core needs; both HF tokenizers (through ``from_hf``) and CharTokenizer fit."""

    def encode_text(self, text: str) -> list[int]: ...

    def decode_ids(self, ids: Sequence[int]) -> str: ...


@attrs.frozen(eq=False)
class TokenContext:
    """Per-tokenizer tables the pure transitions read.

    Attributes:
        name: a label for reports and snapshots (e.g. ``"char"``, ``"fixture-bpe"``).
        pieces: ``pieces[i]`` is the text of vocab id ``i`` decoded alone (no cleanup, specials kept).
        coord_ids: the ids of ``<|coord_0|>``..``<|coord_999|>`` in bin order.
        coord_id_to_bin: inverse of ``coord_ids``.
        im_end_id: id of ``<|im_end|>`` (the assistant turn end, i.e. the EOS we supervise).
        encode: text -> ids without special-token handling; used only for short fragments (the FN
            append, a re-tokenized cut token, the ``{`` fallback), never for a whole rollout.
    """

    name: str
    pieces: tuple[str, ...] = attrs.field(repr=False)
    coord_ids: tuple[int, ...] = attrs.field(repr=False)
    coord_id_to_bin: Mapping[int, int] = attrs.field(repr=False)
    im_end_id: int
    encode: Callable[[str], list[int]] = attrs.field(repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.pieces)

    def piece(self, token_id: int) -> str:
        """Decoded text of one id; an id outside the vocabulary is a TokenizerError, not a crash later."""
        if not 0 <= token_id < len(self.pieces):
            raise TokenizerError(f"token id {token_id} outside the vocabulary (size {len(self.pieces)})")
        return self.pieces[token_id]

    def text_of(self, ids: Sequence[int]) -> str:
        """Concatenated pieces: the char offsets of this text line up with token indices."""
        return "".join(self.pieces[i] for i in ids)

    def is_coord(self, token_id: int) -> bool:
        return token_id in self.coord_id_to_bin

    @classmethod
    def build(cls, name: str, tokenizer: TextTokenizer, vocab_size: int, token_to_id: Callable[[str], Any]):
        """Decode every id once and validate the coord vocabulary and ``<|im_end|>``."""
        pieces = tuple(tokenizer.decode_ids([i]) for i in range(vocab_size))
        try:
            coord_ids = validate_coord_ids([token_to_id(t) for t in COORD_TOKENS])
        except ValueError as exc:
            raise TokenizerError(f"tokenizer {name!r}: {exc}") from exc
        im_end = token_to_id(IM_END)
        if im_end is None or im_end < 0 or pieces[im_end] != IM_END:
            raise TokenizerError(f"tokenizer {name!r} has no single {IM_END} token; it is not a Qwen chat tokenizer")
        return cls(
            name=name,
            pieces=pieces,
            coord_ids=coord_ids,
            coord_id_to_bin={tid: k for k, tid in enumerate(coord_ids)},
            im_end_id=int(im_end),
            encode=tokenizer.encode_text,
        )

    @classmethod
    def from_hf(cls, tokenizer: Any, name: str = "hf") -> TokenContext:
        """Build from a transformers tokenizer (fixture BPE or a real Qwen3-VL checkpoint)."""
        adapter = _HFAdapter(tokenizer)
        return cls.build(name, adapter, len(tokenizer), adapter.token_to_id)


class _HFAdapter:
    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self._unk = getattr(tok, "unk_token_id", None)

    def encode_text(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def decode_ids(self, ids: Sequence[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def token_to_id(self, token: str) -> int | None:
        tid = self._tok.convert_tokens_to_ids(token)
        # A missing token comes back as unk; treat it as missing so validation says so plainly.
        if tid is None or (self._unk is not None and tid == self._unk and token != self._tok.unk_token):
            return None
        return int(tid)


# Characters the char tokenizer knows: printable ASCII, common whitespace and Latin-1/Latin
# Extended-A letters (enough for escaped quotes and non-ASCII descs such as "é").
_CHAR_SPECIALS = (IM_END, ENDOFTEXT, IM_START)
_CHAR_FIRST = 1000 + len(_CHAR_SPECIALS)
_CHARS = tuple(chr(c) for c in (9, 10, 13, *range(32, 127), *range(0xA0, 0x180)))


class CharTokenizer:
    """Character-level tokenizer of the reference scenarios.

    ids 0..999 are ``<|coord_0|>``..``<|coord_999|>`` (so id == bin), then ``<|im_end|>``,
    ``<|endoftext|>``, ``<|im_start|>``, then one id per known character. ``fuse`` adds extra
    multi-character tokens (e.g. ``"}}"``) after the characters, to reproduce BPE fusions exactly.
    Encoding is greedy longest-match over specials, coord tokens and fused pieces.
    """

    def __init__(self, fuse: Sequence[str] = ()) -> None:
        self.vocab: list[str] = [*COORD_TOKENS, *_CHAR_SPECIALS, *_CHARS, *fuse]
        self._ids = {t: i for i, t in enumerate(self.vocab)}
        self._multi = sorted((t for t in self.vocab if len(t) > 1), key=len, reverse=True)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def encode_text(self, text: str) -> list[int]:
        ids: list[int] = []
        i = 0
        while i < len(text):
            for tok in self._multi:
                if text.startswith(tok, i):
                    ids.append(self._ids[tok])
                    i += len(tok)
                    break
            else:
                ch = text[i]
                if ch not in self._ids:
                    raise TokenizerError(f"char tokenizer cannot encode {ch!r} (U+{ord(ch):04X}) at offset {i}")
                ids.append(self._ids[ch])
                i += 1
        return ids

    def decode_ids(self, ids: Sequence[int]) -> str:
        return "".join(self.vocab[i] for i in ids)

    def context(self, name: str = "char") -> TokenContext:
        return TokenContext.build(name, self, len(self.vocab), self.token_to_id)


def char_context(fuse: Sequence[str] = ()) -> TokenContext:
    """The reference scenarios' tokenizer as a TokenContext (optionally with fused pieces)."""
    name = "char" if not fuse else "char+" + "|".join(fuse)
    return CharTokenizer(fuse).context(name)
