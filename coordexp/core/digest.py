"""One checksum over a step's teacher-forced targets: what offline replay compares with the training run.

Why a digest and not the targets: a run's ``trace.jsonl`` row per step stays one short line, and a
replay of the run's recorded rollouts proves it rebuilt every target bit for bit (ids, labels, CE
weights, coord slots and their bins) by comparing 16 hex digits.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from coordexp.core.target_records import TrainTarget


def targets_digest(targets: Iterable[tuple[str, TrainTarget]]) -> str:
    """16 hex digits of SHA-256 over ``(sample_id, target)`` pairs, in the given (step) order."""
    h = hashlib.sha256()
    for sample_id, t in targets:
        row = [sample_id, t.y_train_ids, t.labels, t.ce_weights, t.coord_positions, t.coord_target_bins,
               t.coord_is_prefix, t.prefix_len, t.train_len]
        h.update(json.dumps(row, separators=(",", ":")).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()[:16]
