"""Loading a tokenizer: the committed tiny fixture or a real Qwen3-VL checkpoint, the same way.

Both are plain transformers tokenizer directories, so one code path serves tests and production and
a test on the fixture exercises the real loading code. Loading never touches the network
(``local_files_only=True``). A tokenizer without the 1000 coord tokens is rejected here, at load
time, with the fix, instead of training on ``unk`` later.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from coordexp.core.coords import COORD_TOKENS
from coordexp.core.tokens import TokenContext
from coordexp.errors import TokenizerError

_FIXTURE_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "tokenizer"
_BUILD_HINT = "python -m coordexp.data.tiny_tokenizer --out fixtures/tokenizer"


def fixture_tokenizer_path() -> Path:
    """Directory of the committed tiny tokenizer (present in a source checkout)."""
    if not (_FIXTURE_DIR / "tokenizer.json").is_file():
        raise TokenizerError(
            f"the fixture tokenizer is missing at {_FIXTURE_DIR}; it ships with a source checkout. "
            f"Regenerate it with `{_BUILD_HINT}`"
        )
    return _FIXTURE_DIR


def load_tokenizer(path: str | Path) -> Any:
    """Load the tokenizer in ``path`` offline and check that it carries the coord vocabulary."""
    where = Path(path)
    if not where.is_dir():
        raise TokenizerError(
            f"tokenizer directory {where} does not exist (a checkpoint or tokenizer folder, as in model.model)"
        )
    from transformers import AutoTokenizer  # after the cheap check: a wrong path fails without the import
    try:
        tok = AutoTokenizer.from_pretrained(str(where), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot load a tokenizer from {where}: {exc}") from exc
    check_coord_vocab(tok, source=str(where))
    return tok


def check_coord_vocab(tok: Any, *, source: str) -> None:
    """Every ``<|coord_k|>`` must be one distinct, known token."""
    unk = getattr(tok, "unk_token_id", None)
    ids = tok.convert_tokens_to_ids(list(COORD_TOKENS))
    missing = [k for k, i in enumerate(ids) if i is None or i == unk]
    if missing or len(set(ids)) != len(COORD_TOKENS):
        first = ", ".join(COORD_TOKENS[k] for k in missing[:3]) or "duplicate ids"
        raise TokenizerError(
            f"tokenizer {source} lacks the coord vocabulary ({len(missing)} of {len(COORD_TOKENS)} coord "
            f"tokens missing or not distinct: {first}). Expand the vocabulary with the 1000 tokens "
            "<|coord_0|>..<|coord_999|> (one token each) and resize the model's embeddings, or point "
            "model.model at a coord-token checkpoint"
        )


@functools.lru_cache(maxsize=4)
def _context_for(resolved: str) -> TokenContext:
    tok = load_tokenizer(resolved)
    return TokenContext.from_hf(tok, name=Path(resolved).name)


def load_token_context(path: str | Path) -> TokenContext:
    """The TokenContext of the tokenizer in ``path``, built once per process (decoding every id is slow)."""
    return _context_for(str(Path(path).resolve()))
