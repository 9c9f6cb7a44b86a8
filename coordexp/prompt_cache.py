"""Prompt encodings kept across steps, so a sample's image is decoded and processed once per run, not per step.

A prompt depends only on the sample and the run's prompts, and every epoch (and every reuse, and every
evaluation) asks for it again; the processor's image work is a large part of a step on small models. The
cache is bounded by the bytes of the tensors and images it holds (``BUDGET_BYTES``); the least recently
used entries leave first, so a data set larger than the budget simply re-encodes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import torch

from coordexp.learn.encode import Encoding

BUDGET_BYTES = 1 << 30  # 1 GiB of pixel values, ids and decoded images


def _bytes(messages: list[dict[str, Any]], enc: Encoding) -> int:
    tensors = [t for t in (enc.input_ids, enc.mm_token_type_ids, enc.pixel_values, enc.image_grid_thw) if t is not None]
    size = sum(t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor))
    for msg in messages:
        for part in msg["content"] if not isinstance(msg["content"], str) else ():
            img = part.get("image")
            if img is not None:
                size += img.width * img.height * len(img.getbands())
    return size


class PromptCache:
    def __init__(self, budget_bytes: int = BUDGET_BYTES) -> None:
        self.budget = budget_bytes
        self.used = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[str, tuple[list[dict[str, Any]], Encoding, int]] = OrderedDict()

    def get(self, sample_id: str) -> tuple[list[dict[str, Any]], Encoding] | None:
        entry = self._entries.get(sample_id)
        if entry is None:
            self.misses += 1
            return None
        self._entries.move_to_end(sample_id)
        self.hits += 1
        return entry[0], entry[1]

    def put(self, sample_id: str, messages: list[dict[str, Any]], enc: Encoding) -> None:
        size = _bytes(messages, enc)
        if size > self.budget or sample_id in self._entries:
            return
        self._entries[sample_id] = (messages, enc, size)
        self.used += size
        while self.used > self.budget:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.used -= dropped

    def __len__(self) -> int:
        return len(self._entries)
