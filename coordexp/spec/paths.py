"""Where spec documents and fixtures live (the repository root, found from this file)."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_DIR = REPO_ROOT / "spec" / "changes"
FIXTURES_DIR = REPO_ROOT / "fixtures"

CHANGE_IDS: tuple[str, ...] = (
    "2026-01-15-add-rollout-matching-trainer",
    "2026-01-16-add-stage2-post-rollout-packing",
    "2026-01-19-add-stage2-rollout-buffer-offload",
    "2026-01-19-update-stage2-post-rollout-packing-binpacking",
    "stage2-ab-training",
    "stage2-stability-controls",
)
