"""What the pure core needs to know about a tokenizer, computed once.

``TokenContext`` holds a piece table (the exact bytes of every vocab id), the coord-id -> bin map
and the id of ``<|im_end|>``. Parsing works on token ids and this table only: no transition decodes
a whole sequence and re-encodes it, so the kept prefix is never changed by a decode/encode round
trip.

The table holds bytes, not text, because Qwen's tokenizer is byte-level BPE: one character may span
several tokens whose pieces alone are not valid UTF-8 (a CJK character is often three tokens). Text
is made by joining the bytes of many tokens and decoding once, so "人" or "🐕" comes out whole,
where a per-token decode gives replacement characters (legacy reference 15.1 W22). Offsets that map
text to tokens are byte offsets (``coordexp.core.text``).

Two tokenizers plug in:
- any HF tokenizer (the fixture BPE tokenizer, a real Qwen3-VL checkpoint) via ``from_hf``;
- ``CharTokenizer``, the character-level tokenizer the reference scenarios are written against
  (ids 0..999 are the coord bins, every other character is one token).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import attrs

from coordexp.core.coords import COORD_TOKENS, validate_coord_ids
from coordexp.errors import TokenizerError

_FRAGMENT_MEMO = 4096  # distinct fragments remembered per tokenizer

IM_END = "<|im_end|>"
IM_START = "<|im_start|>"
ENDOFTEXT = "<|endoftext|>"


class TextTokenizer(Protocol):
    """The two calls the core needs; both HF tokenizers (through ``from_hf``) and CharTokenizer fit."""

    def encode_text(self, text: str) -> list[int]: ...

    def piece_bytes(self, vocab_size: int) -> list[bytes]: ...


@attrs.frozen(eq=False)
class TokenContext:
    """Per-tokenizer tables the pure transitions read.

    Attributes:
        name: a label for reports and snapshots (e.g. ``"char"``, ``"fixture-bpe"``).
        piece_bytes: ``piece_bytes[i]`` is the exact byte string of vocab id ``i`` (specials kept).
        coord_ids: the ids of ``<|coord_0|>``..``<|coord_999|>`` in bin order.
        coord_id_to_bin: inverse of ``coord_ids``.
        im_end_id: id of ``<|im_end|>`` (the assistant turn end, i.e. the EOS we supervise).
        encode: text -> ids without special-token handling; used only for short fragments (the FN
            append, a re-tokenized cut token, the ``{`` fallback), never for a whole rollout.
    """

    name: str
    piece_bytes: tuple[bytes, ...] = attrs.field(repr=False)
    coord_ids: tuple[int, ...] = attrs.field(repr=False)
    coord_id_to_bin: Mapping[int, int] = attrs.field(repr=False)
    im_end_id: int
    encode: Callable[[str], list[int]] = attrs.field(repr=False)
    _fragments: dict[str, tuple[int, ...]] = attrs.field(factory=dict, init=False, repr=False)

    @property
    def vocab_size(self) -> int:
        return len(self.piece_bytes)

    def encode_fragment(self, text: str) -> tuple[int, ...]:
        """``encode`` for the short fragments cuts re-encode (``"]}``, ``{``), remembered per text.

        A dense rollout re-encodes the same few fused closers every step; the tokenizer call costs
        more than the rest of the cut. The memo is bounded, and ``encode`` is deterministic.
        """
        ids = self._fragments.get(text)
        if ids is None:
            ids = tuple(self.encode(text))
            if len(self._fragments) < _FRAGMENT_MEMO:
                self._fragments[text] = ids
        return ids


    def piece(self, token_id: int) -> str:
        """Display text of one id; bytes that are not whole UTF-8 characters show as ``\\xNN``.

        For reports only: text that spans tokens comes from ``text_of`` (bytes joined first).
        """
        if not 0 <= token_id < len(self.piece_bytes):
            raise TokenizerError(f"token id {token_id} outside the vocabulary (size {len(self.piece_bytes)})")
        return self.piece_bytes[token_id].decode("utf-8", errors="backslashreplace")

    def bytes_of(self, ids: Sequence[int]) -> bytes:
        """The exact bytes of ``ids`` (their pieces joined)."""
        table = self.piece_bytes
        return b"".join([table[i] for i in ids])

    def text_of(self, ids: Sequence[int]) -> str:
        """The text of ``ids``: pieces joined as bytes, then decoded once (invalid bytes become U+FFFD)."""
        return self.bytes_of(ids).decode("utf-8", errors="replace")

    def is_coord(self, token_id: int) -> bool:
        return token_id in self.coord_id_to_bin

    @classmethod
    def build(cls, name: str, tokenizer: TextTokenizer, vocab_size: int, token_to_id: Callable[[str], Any]):
        """Read every id's bytes once and validate the coord vocabulary and ``<|im_end|>``."""
        pieces = tuple(tokenizer.piece_bytes(vocab_size))
        try:
            coord_ids = validate_coord_ids([token_to_id(t) for t in COORD_TOKENS])
        except ValueError as exc:
            raise TokenizerError(f"tokenizer {name!r}: {exc}") from exc
        im_end = token_to_id(IM_END)
        if im_end is None or im_end < 0 or pieces[im_end] != IM_END.encode():
            raise TokenizerError(f"tokenizer {name!r} has no single {IM_END} token; it is not a Qwen chat tokenizer")
        return cls(
            name=name,
            piece_bytes=pieces,
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


def byte_level_alphabet() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2 ``bytes_to_unicode``), inverted: printable char -> byte."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars)}


_BYTE_LEVEL = byte_level_alphabet()
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")


class _HFAdapter:
    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self._unk = getattr(tok, "unk_token_id", None)

    def encode_text(self, text: str) -> list[int]:
        return list(self._tok.encode(text, add_special_tokens=False))

    def piece_bytes(self, vocab_size: int) -> list[bytes]:
        """Each id's bytes: from the byte-level alphabet when the tokenizer is byte-level (Qwen),
        else from a per-id decode (whole characters, plus ``<0xNN>`` byte-fallback tokens).

        Added tokens (specials, coord tokens) are their content. An id with no token (a vocabulary
        hole) has an empty piece: decoding it gives no text either.
        """
        added = {int(i): t.content.encode("utf-8") for i, t in self._tok.added_tokens_decoder.items()}
        tokens = self._tok.convert_ids_to_tokens(list(range(vocab_size)))
        backend = getattr(self._tok, "backend_tokenizer", None)
        byte_level = backend is not None and type(backend.decoder).__name__ == "ByteLevel"
        out = []
        for i, token in enumerate(tokens):
            if i in added:
                out.append(added[i])
            elif token is None:
                out.append(b"")
            elif byte_level:
                out.append(_byte_level_bytes(token, i))
            elif (m := _BYTE_FALLBACK.fullmatch(token)) is not None:
                out.append(bytes([int(m.group(1), 16)]))
            else:
                out.append(self._tok.decode([i], skip_special_tokens=False, clean_up_tokenization_spaces=False).encode())
        return out

    def token_to_id(self, token: str) -> int | None:
        tid = self._tok.convert_tokens_to_ids(token)
        # A missing token comes back as unk; treat it as missing so validation says so plainly.
        if tid is None or (self._unk is not None and tid == self._unk and token != self._tok.unk_token):
            return None
        return int(tid)


def _byte_level_bytes(token: str, token_id: int) -> bytes:
    try:
        return bytes(_BYTE_LEVEL[c] for c in token)
    except KeyError as exc:
        raise TokenizerError(
            f"token {token_id} ({token!r}) holds {exc.args[0]!r}, which is not in the byte-level alphabet; "
            "the tokenizer's ByteLevel decoder and its vocabulary disagree"
        ) from exc


# Characters the char tokenizer knows: printable ASCII, common whitespace and Latin-1/Latin
# Extended-A letters (enough for escaped quotes and non-ASCII descs such as "é").
_CHAR_SPECIALS = (IM_END, ENDOFTEXT, IM_START)
_CHARS = tuple(chr(c) for c in (9, 10, 13, *range(32, 127), *range(0xA0, 0x180)))


class CharTokenizer:
    """Character-level tokenizer of the reference scenarios.

    ids 0..999 are ``<|coord_0|>``..``<|coord_999|>`` (so id == bin), then ``<|im_end|>``,
    ``<|endoftext|>``, ``<|im_start|>``, then one id per known character. ``fuse`` adds extra
    multi-character tokens (e.g. ``"}}"``) after the characters, to reproduce BPE fusions exactly.
    Encoding is greedy longest-match over specials, coord tokens and fused pieces (one regex).
    """

    def __init__(self, fuse: Sequence[str] = ()) -> None:
        self.vocab: list[str] = [*COORD_TOKENS, *_CHAR_SPECIALS, *_CHARS, *fuse]
        self._ids = {t: i for i, t in enumerate(self.vocab)}
        multi = _trie_regex([t for t in self.vocab if len(t) > 1])
        self._pattern = re.compile(multi + "|." if multi else ".", re.S)

    def __len__(self) -> int:
        return len(self.vocab)

    def token_to_id(self, token: str) -> int | None:
        return self._ids.get(token)

    def encode_text(self, text: str) -> list[int]:
        table = self._ids
        ids: list[int] = []
        for m in self._pattern.finditer(text):
            tid = table.get(m.group())
            if tid is None:
                ch = m.group()
                raise TokenizerError(f"char tokenizer cannot encode {ch!r} (U+{ord(ch):04X}) at offset {m.start()}")
            ids.append(tid)
        return ids

    def piece_bytes(self, vocab_size: int) -> list[bytes]:
        return [t.encode("utf-8") for t in self.vocab[:vocab_size]]

    def context(self, name: str = "char") -> TokenContext:
        return TokenContext.build(name, self, len(self.vocab), self.token_to_id)


def _trie_regex(words: Sequence[str]) -> str:
    """A regex matching the longest of ``words`` at a position (a trie, so matching costs O(length)).

    Greedy ``(...)?`` prefers continuing to a longer word and falls back to the shorter one that ends
    here, which is exactly greedy longest-match; 1000 coord tokens as plain alternatives were tried
    one by one at every character.
    """
    trie: dict = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = {}

    def render(node: dict) -> str:
        alts = [re.escape(ch) + render(sub) for ch, sub in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if "" in node else body

    return render(trie)


def char_context(fuse: Sequence[str] = ()) -> TokenContext:
    """The reference scenarios' tokenizer as a TokenContext (optionally with fused pieces)."""
    name = "char" if not fuse else "char+" + "|".join(fuse)
    return CharTokenizer(fuse).context(name)
