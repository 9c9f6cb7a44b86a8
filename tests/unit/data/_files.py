"""Helpers for the data tests: real image files and JSONL files written into ``tmp_path``."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image


def write_image(path: Path, size: tuple[int, int] = (64, 48), mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = (200, 30, 30) if mode == "RGB" else (200, 30, 30, 128)
    Image.new(mode, size, colour).save(path)
    return path


def write_jsonl(path: Path, lines: list[object]) -> Path:
    """Each item is a record (dumped as JSON) or a raw ``str`` line written verbatim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n"
    path.write_text(text, encoding="utf-8")
    return path


def record(**overrides: object) -> dict[str, object]:
    """A valid record over ``img/a.png`` (64 x 48) with one box; keyword overrides replace fields."""
    base: dict[str, object] = {
        "images": ["img/a.png"],
        "objects": [{"desc": "cat", "bbox_2d": ["<|coord_10|>", "<|coord_20|>", "<|coord_300|>", "<|coord_400|>"]}],
        "width": 64,
        "height": 48,
    }
    base.update(overrides)
    return base
