"""A tiny sentence-embedding model built offline: a random 1-layer BERT and a word-level WordPiece vocab.

The desc monitor loads whatever folder ``semantic_model`` names with transformers' ``AutoModel`` /
``AutoTokenizer``; this folder has the same layout as a downloaded sentence-transformers model
(config.json, weights, tokenizer files), so the real loading, tokenising, pooling and caching run.
"""

from __future__ import annotations

from pathlib import Path

WORDS = ("cat", "dog", "red", "blue", "square", "circle", "triangle", "yellow", "green", "traffic", "light",
         "person", "car", "big", "small")


def build_tiny_encoder(folder: Path, *, seed: int = 0) -> Path:
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
    tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64, initializer_range=1.0)
    # wide init: words get distinct embeddings, so cosines spread over [-1, 1] instead of all near 1
    BertModel(config).eval().save_pretrained(folder)
    return folder
