"""The one in-memory sample record every data source produces (JSONL files, synthetic generators).

A ``Sample`` is already validated: its objects passed the data contract (``coordexp.data.jsonl``) or
were built by a generator, so nothing downstream re-checks coordinates or descs. Images stay paths
until a step needs the pixels (``open_images``), so loading a large JSONL costs one ``stat`` per
image, not one decode.

Object order: ``objects`` holds the GT in the order its source gave; ``order_objects`` applies
``custom.object_ordering`` and renumbers, and both the GT answer (``coordexp.data.prompts``) and the
Stage-2 target sample (``target_sample``) go through it, so Channel A and Channel B see one order.
"""

from __future__ import annotations

import random
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import attrs
from PIL import Image, UnidentifiedImageError

from coordexp.core.coordjson import GeomType, GTObject, Layout
from coordexp.core.target_records import TargetSample
from coordexp.errors import DataError

ImageSource = Path | Image.Image
ObjectOrdering = Literal["sorted", "random"]  # custom.object_ordering
ORDERINGS: tuple[str, ...] = ("sorted", "random")


def _frozen_mapping(value: Mapping[str, object]) -> Mapping[str, object]:
    return types.MappingProxyType(dict(value))


@attrs.frozen
class Sample:
    """One image sample: image(s), pixel size and GT objects (norm1000 bins).

    ``width``/``height`` are the pixel size of ``images[0]``, the image the coordinates refer to
    (the contract's records are single-image in practice); they are used for pixel recovery.
    """

    sample_id: str
    images: tuple[ImageSource, ...] = attrs.field(converter=tuple)
    width: int  # px
    height: int  # px
    objects: tuple[GTObject, ...] = attrs.field(converter=tuple)  # norm1000 bins, source order
    source: str  # "train.jsonl:12" or "synthetic://shapes?n=8&seed=0#3"
    metadata: Mapping[str, object] = attrs.field(factory=dict, converter=_frozen_mapping)


def open_images(sample: Sample) -> list[Image.Image]:
    """The sample's images as RGB PIL images, decoded now.

    The JSONL loader only checked that each file exists; a file that cannot be decoded, or whose
    first image does not have the record's ``width`` x ``height``, is a DataError here (the
    coordinates and pixel recovery would be wrong), which the executor counts as a dropped sample.
    """
    out = []
    for i, src in enumerate(sample.images):
        img = src if isinstance(src, Image.Image) else _read(src, sample)
        if i == 0 and img.size != (sample.width, sample.height):
            raise DataError(
                f"{sample.source} (sample {sample.sample_id}): image {_name(src)} is {img.size[0]}x{img.size[1]} px "
                f"but the record says width={sample.width}, height={sample.height}; fix the record's width/height "
                "or point it at the image the coordinates were made for"
            )
        out.append(img if img.mode == "RGB" else img.convert("RGB"))
    return out


def _name(src: ImageSource) -> str:
    return str(src) if isinstance(src, Path) else "(in-memory image)"


def _read(path: Path, sample: Sample) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            return img.copy() if img.mode == "RGB" else img.convert("RGB")
    except FileNotFoundError as exc:
        raise DataError(
            f"{sample.source} (sample {sample.sample_id}): image {path} does not exist (anymore); check "
            "custom.image_root, or the JSONL file's folder that relative image paths resolve against"
        ) from exc
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(
            f"{sample.source} (sample {sample.sample_id}): image {path} cannot be read ({exc}); check the file, "
            "custom.image_root, or the JSONL file's folder that relative image paths resolve against"
        ) from exc


def order_objects(
    sample: Sample, ordering: ObjectOrdering, *, seed: int | None = None, epoch: int = 0
) -> tuple[GTObject, ...]:
    """The GT objects in ``custom.object_ordering`` order, renumbered ``index`` 1..N.

    ``sorted``: top-to-bottom, then left-to-right, by the top-left corner of each object's bounding
    box, ``(min y, min x)`` (for a bbox that is ``(y1, x1)``); ties keep the source order.
    ``random``: a shuffle seeded by ``(seed, epoch, sample_id)``, so it is the same in every process
    and for every caller of one sample in one epoch, and changes between epochs. ``seed`` is the
    run's ``training.seed`` and is required here (no second default beside the schema's).
    """
    objs = list(sample.objects)
    if ordering == "sorted":
        objs.sort(key=_anchor)
    elif ordering == "random":
        if seed is None:
            raise DataError("object_ordering 'random' needs the run's seed (training.seed); pass seed=")
        random.Random(f"{seed}:{epoch}:{sample.sample_id}").shuffle(objs)
    else:
        raise DataError(f"object ordering must be one of {ORDERINGS} (custom.object_ordering), got {ordering!r}")
    return tuple(attrs.evolve(o, index=i) for i, o in enumerate(objs, start=1))


def _anchor(obj: GTObject) -> tuple[int, int]:
    xs, ys = obj.points[0::2], obj.points[1::2]
    return (min(ys), min(xs))


def target_sample(
    sample: Sample,
    *,
    bbox_only: bool = False,
    layout: Layout = Layout.OBJECT_N,
    ordering: ObjectOrdering | None = None,
    seed: int | None = None,
    epoch: int = 0,
) -> TargetSample:
    """The sample's GT as BuildTarget takes it; ``ordering`` None keeps the source order.

    ``bbox_only`` is the Stage-2 AB v1 rule (reference AB §0): a polygon GT object is an error
    naming the sample and the object, never silently dropped.
    """
    if bbox_only:
        for i, o in enumerate(sample.objects):
            if o.geom_type is not GeomType.BBOX:
                raise DataError(
                    f"{sample.source} (sample {sample.sample_id}): objects[{i}] ({o.desc!r}) is a "
                    f"{o.geom_type.value}; Stage-2 AB is bbox-only v1. Convert the object to a bbox_2d"
                )
    objs = sample.objects if ordering is None else order_objects(sample, ordering, seed=seed, epoch=epoch)
    return TargetSample(sample.sample_id, objs, layout)
