"""Build the tiny Qwen-style tokenizer that tests and the tiny model use, fully offline.

    python -m coordexp.data.tiny_tokenizer --out fixtures/tokenizer

It is a byte-level BPE with Qwen's pre-tokenizer, the Qwen chat markers as special tokens, the 1000
coord tokens as ordinary added tokens (one token each, and ``decode(skip_special_tokens=True)``
keeps them), and a ChatML chat template. It is small enough to commit, and trained on CoordJSON so
that punctuation fuses the way it does with the real tokenizer. The build is deterministic: running it
again writes byte-identical files, which a test checks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer

from coordexp.core.coords import COORD_TOKENS
from coordexp.data.tiny_corpus import corpus_lines, training_segments

MODEL_MAX_LENGTH = 32768  # generous for tests; the real limit is the config's global_max_length
# Upper bound on bytes + specials + merges (before coord tokens); the corpus saturates near 880.
BPE_VOCAB_SIZE = 900

# Qwen2's pre-tokenization pattern (contractions, letters, single digits, punctuation runs, spaces).
PRETOKENIZE = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

ENDOFTEXT = "<|endoftext|>"
IM_END = "<|im_end|>"
SPECIALS = (
    ENDOFTEXT,
    "<|im_start|>",
    IM_END,
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

# ChatML as Qwen renders it: each turn is `<|im_start|>role\n...<|im_end|>\n`; an image part is the
# vision block; `add_generation_prompt` opens the assistant turn. No default system prompt: coordexp
# always sends its own. An unknown content part is an error rather than silently dropped text.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' ~ message['role'] ~ '\\n' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif part['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- else -%}{{- raise_exception('unsupported content part type: ' ~ part['type']) -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


def train_bpe(vocab_size: int = BPE_VOCAB_SIZE) -> Tokenizer:
    """Train the byte-level BPE on the generated corpus (specials first, so they get ids 0..6)."""
    bpe = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    bpe.normalizer = normalizers.NFC()
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(training_segments(corpus_lines()), trainer=trainer)
    return bpe


def build_tokenizer(vocab_size: int = BPE_VOCAB_SIZE) -> Qwen2Tokenizer:
    """The transformers tokenizer: trained BPE + chat markers + coord vocabulary + chat template."""
    model = json.loads(train_bpe(vocab_size).to_str())["model"]
    tok = Qwen2Tokenizer(
        vocab=model["vocab"],
        # tokenizers 0.23 wants merges as pairs, not "a b" strings.
        merges=[tuple(m) for m in model["merges"]],
        unk_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
        model_max_length=MODEL_MAX_LENGTH,
    )
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    # Not special: vLLM and HF decoding skip special tokens by default, and coords must survive.
    tok.add_tokens(list(COORD_TOKENS), special_tokens=False)
    tok.chat_template = CHAT_TEMPLATE
    return tok


def write_tokenizer(out: Path, vocab_size: int = BPE_VOCAB_SIZE) -> list[Path]:
    """Build and save into ``out``; returns the written files, sorted."""
    out.mkdir(parents=True, exist_ok=True)
    build_tokenizer(vocab_size).save_pretrained(str(out))
    return sorted(p for p in out.iterdir() if p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="directory to write the tokenizer files into")
    parser.add_argument(
        "--vocab-size", type=int, default=BPE_VOCAB_SIZE, help="BPE vocabulary before coord tokens"
    )
    args = parser.parse_args(argv)
    for path in write_tokenizer(args.out, args.vocab_size):
        print(f"{path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
