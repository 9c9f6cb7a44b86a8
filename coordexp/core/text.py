"""Token-aligned text: a token sequence as exact bytes, and the one rule that maps a cut to tokens.

Parse, the prefix policy and BuildTarget all need to answer "which tokens make exactly the text up
to here?" and "which tokens touch these characters?". Both are answered here, once, on bytes:
byte-level BPE splits a character into several tokens, so character offsets cannot say where a
token starts, while byte offsets always can.

The cut rule (reference §4.4, extended to bytes): tokens that end at or before the cut are kept
verbatim; a token that straddles the cut is replaced by the encoding of its leading bytes, and that
re-encoding must give back exactly those bytes. When the straddling token starts inside a character
(its first byte is a UTF-8 continuation byte), its leading bytes are not text, so the re-encoded part
starts at the start of that character instead: a cut never splits a character and never re-encodes
anything that is not whole text.
"""

from __future__ import annotations

import codecs
from bisect import bisect_right
from collections.abc import Sequence
from itertools import accumulate

import attrs

from coordexp.core.tokens import TokenContext
from coordexp.errors import TokenizerError


def _is_continuation(byte: int) -> bool:
    return 0x80 <= byte < 0xC0


@attrs.frozen
class TokenText:
    """Ids, their joined bytes and each token's start offset (``len(ids) + 1`` entries, bytes)."""

    ids: tuple[int, ...]
    data: bytes
    starts: tuple[int, ...]

    @classmethod
    def of(cls, ids: Sequence[int], ctx: TokenContext) -> TokenText:
        table = ctx.piece_bytes
        pieces = [table[i] for i in ids]
        return cls(tuple(ids), b"".join(pieces), tuple(accumulate(map(len, pieces), initial=0)))

    @property
    def text(self) -> str:
        """The decoded text (invalid bytes, which a model can emit, become U+FFFD)."""
        return self.data.decode("utf-8", errors="replace")

    def token_at(self, pos: int) -> int:
        """Index of the token whose bytes contain offset ``pos`` (the last one on ties)."""
        return bisect_right(self.starts, pos) - 1

    def head(self, n_tokens: int) -> TokenText:
        """The first ``n_tokens`` tokens (no re-encoding: a token boundary)."""
        return TokenText(self.ids[:n_tokens], self.data[: self.starts[n_tokens]], self.starts[: n_tokens + 1])

    def cut(self, pos: int, ctx: TokenContext) -> tuple[tuple[int, ...], int] | None:
        """Ids whose bytes are exactly ``data[:pos]`` and how many of them are re-encoded at the end.

        None when the straddling part does not re-encode to exactly the same bytes (the caller then
        tries an earlier boundary, and counts it).
        """
        if pos <= 0:
            return (), 0
        if pos >= len(self.data):
            return self.ids, 0
        i = self.token_at(pos)
        if self.starts[i] == pos:
            return self.ids[:i], 0
        while i > 0 and _is_continuation(self.data[self.starts[i]]):
            i -= 1  # start re-encoding at the character the straddling token began inside
        tail = _reencode(self.data[self.starts[i] : pos], ctx)
        if tail is None:
            return None
        return self.ids[:i] + tail, len(tail)

    def token_texts(self) -> tuple[str, ...]:
        """The characters each token completes ("merged pieces"), for reports.

        Joined, they are exactly ``text``. A token that ends inside a multi-byte character gives ""
        and the token that completes the character carries all of it, so no replacement character
        appears where a per-token decode would print one (legacy reference 15.1 W22).
        """
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        data, starts = self.data, self.starts
        out = [decoder.decode(data[starts[i] : starts[i + 1]]) for i in range(len(self.ids))]
        if out:
            out[-1] += decoder.decode(b"", final=True)
        return tuple(out)

    def overlapping(self, spans: Sequence[tuple[int, int]]) -> tuple[int, ...]:
        """Indices of the non-empty tokens whose bytes overlap any ``[start, end)`` byte span."""
        out: list[int] = []
        starts = self.starts
        for s, e in spans:
            if e <= s:
                continue
            first = max(self.token_at(s), 0)
            last = bisect_right(starts, e - 1) - 1
            out.extend(i for i in range(first, min(last, len(self.ids) - 1) + 1) if starts[i + 1] > starts[i])
        return tuple(sorted(set(out)))


def _reencode(piece: bytes, ctx: TokenContext) -> tuple[int, ...] | None:
    """Ids for ``piece`` whose bytes are exactly ``piece``, else None."""
    try:
        text = piece.decode("utf-8")
        ids = ctx.encode_fragment(text)
    except (UnicodeDecodeError, TokenizerError):
        return None
    if any(not 0 <= i < ctx.vocab_size for i in ids):
        return None
    return ids if ctx.bytes_of(ids) == piece else None
