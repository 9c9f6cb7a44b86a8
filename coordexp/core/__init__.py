"""Pure, deterministic transitions and their records.

Nothing under ``coordexp.core`` imports torch, transformers, vllm or ``coordexp.backends``; a test
enforces it. Inputs and outputs are frozen attrs records, so every transition can be replayed from a
fixture and compared with a snapshot.
"""
