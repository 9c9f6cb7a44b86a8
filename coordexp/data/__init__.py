"""Data side of coordexp: the JSONL contract, prompts, and the tiny offline tokenizer.

Heavy libraries (transformers, tokenizers) are imported lazily inside functions here, or at module
level only in ``tiny_*`` builder modules and ``processors``, so ``import coordexp.data`` stays cheap.
Nothing here imports ``coordexp.learn``: learn builds on data, never the reverse.
"""
