"""GT-vs-prediction overlays from a run's monitor dumps (``monitor_dumps/step_XXXXXX.json``).

A dump names each sample's image by path and size (``coordexp.telemetry.monitor``). A path is looked
up as written, then under the run folder; an in-memory image (the ``synthetic://`` generators) is drawn
again from the generator address in the run's ``config.yaml`` when the sample id is one of its
samples. An image that cannot be had is counted and drawn as a grey canvas of the recorded size, and
the page says so; it never stops the report. A dump that is not valid JSON is a ``DataError`` naming
the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs
import yaml
from PIL import Image

from coordexp.core.coords import NUM_BINS
from coordexp.errors import CoordexpError, DataError
from coordexp.report.overlay import draw_overlay, monitor_sample_sets
from coordexp.telemetry.monitor import DUMP_DIR

DUMP_RE = re.compile(r"^step_(\d{6,})(\.rank\d+)?\.json$")
IN_MEMORY = "(in-memory image)"
DATA_KEYS = ("train_jsonl", "val_jsonl")


@attrs.frozen
class Overlay:
    step: int
    sample_id: str
    image: Image.Image
    source: str  # where the picture came from: a path, "regenerated", or why it is missing
    missing: bool
    stats: Mapping[str, Any]
    dump: Path


def dump_files(run: Path) -> list[tuple[int, Path]]:
    folder = run / DUMP_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := DUMP_RE.match(p.name))]
    return sorted(found)


def read_dump(path: Path) -> dict[str, Any]:
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a monitor dump ({exc}); delete it or rerun the step") from exc
    if not isinstance(payload, dict) or not isinstance(payload.get("samples"), list):
        raise DataError(f"{path}: a monitor dump is an object with a 'samples' list")
    return payload


class ImageFinder:
    """The picture of a dumped sample, from disk or regenerated; caches the generator's samples."""

    def __init__(self, run: Path) -> None:
        self.run = run
        self._generated: dict[str, Image.Image] | None = None

    def _generator_images(self) -> dict[str, Image.Image]:
        if self._generated is not None:
            return self._generated
        from coordexp.data.dataset import load_samples, parse_generator_uri

        self._generated = {}
        cfg_path = self.run / "config.yaml"
        try:
            custom = (yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}).get("custom", {})
        except (OSError, yaml.YAMLError):
            return self._generated
        for key in DATA_KEYS:
            address = custom.get(key) if isinstance(custom, dict) else None
            try:
                if not address or parse_generator_uri(str(address), key=f"custom.{key}") is None:
                    continue
                for s in load_samples(str(address), key=f"custom.{key}"):
                    if s.images and isinstance(s.images[0], Image.Image):
                        self._generated.setdefault(s.sample_id, s.images[0])
            except CoordexpError:
                continue  # a generator this coordexp cannot run: those images count as missing
        return self._generated

    def find(self, sample_id: str, image: str | None) -> tuple[Image.Image | None, str]:
        if image is None:
            return None, "no image in the dump"
        if image == IN_MEMORY:
            found = self._generator_images().get(sample_id)
            return (found, "regenerated from config.yaml") if found is not None else (
                None, "in-memory image that config.yaml cannot regenerate")
        for candidate in (Path(image), self.run / image):
            if candidate.is_file():
                try:
                    with Image.open(candidate) as img:
                        return img.convert("RGB"), str(candidate)
                except OSError:
                    return None, f"unreadable image {candidate}"
        return None, f"image not found: {image}"


def _first_image(sample: Mapping[str, Any]) -> tuple[str | None, int | None, int | None]:
    for msg in sample.get("messages_summary", ()):
        for part in msg.get("parts", ()):
            if part.get("kind") == "image":
                return part.get("image"), part.get("width"), part.get("height")
    return None, None, None


def overlays(run: Path, *, limit: int) -> Iterator[Overlay]:
    """The first ``limit`` samples' overlays, oldest dump first."""
    finder = ImageFinder(run)
    made = 0
    for step, path in dump_files(run):
        for sample in read_dump(path)["samples"]:
            if made >= limit:
                return
            name, width, height = _first_image(sample)
            picture, source = finder.find(str(sample.get("sample_id")), name)
            if picture is not None:
                width, height = picture.size
            width, height = width or NUM_BINS, height or NUM_BINS  # no size: the norm1000 grid itself
            gt, preds = monitor_sample_sets(sample)
            title = f"step {step} {sample.get('sample_id')}"
            yield Overlay(step, str(sample.get("sample_id")),
                          draw_overlay(picture, gt, [preds], width=width, height=height, title=title),
                          source, picture is None, dict(sample.get("stats") or {}), path)
            made += 1


def count_samples(run: Path) -> int:
    return sum(len(read_dump(p)["samples"]) for _, p in dump_files(run))
