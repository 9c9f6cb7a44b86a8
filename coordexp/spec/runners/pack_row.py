"""Runner for ``pack_row``: segments -> one packed row of the tiny Qwen-VL model (reference rollout 8.4).

Input (one case, or ``{"cases": [case, ...]}``)::

    {"family": "qwen3_vl",                          (optional; or "qwen2_5_vl")
     "cap": 10,                                     (tokens; null for no cap)
     "segments": [{"parts": [part, ...]}, ...]}

A part is ``{"tokens": [id, ...]}`` (ids taken verbatim) or ``{"image": {"width": W, "height": H}}``:
a flat-colour image of that size, run through the tiny processor, which turns it into
``<|vision_start|>``, one ``<|image_pad|>`` per merged vision token, ``<|vision_end|>`` plus its
``pixel_values`` and ``image_grid_thw``. Segments carry no supervision: the row layout does not read it.

Output: the row length, the segment lengths and cumulative boundaries, the keys passed to the model
(and whether an attention mask is among them), the position id shape, row 0 (text positions), rows
1-3 (the M-RoPE t/h/w positions) and whether they equal row 0, the token types, and the image tensors
(``image_grid_thw`` rows and the ``pixel_values`` shape of the row, plus whether they are the
segments' own tensors concatenated in segment order); or the expected ``PackingError``.

The tiny model is built once per process and family (``functools.cache``); its weights do not
matter here, only its config and ``get_rope_index``. torch is imported inside functions so that
building the runner registry stays light.
"""

from __future__ import annotations

import functools
from typing import Any, Literal

import attrs
import cattrs

from coordexp.errors import PackingError, SpecError
from coordexp.serde import structure
from coordexp.spec.runners import each_case, expected_error

TRANSITION = "pack_row"

_IMAGE_COLOUR = (200, 120, 40)  # any fixed colour: only the image size shapes the row
_VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>")


@attrs.frozen
class ImageSize:
    width: int  # pixels
    height: int  # pixels


@attrs.frozen
class Part:
    tokens: tuple[int, ...] = ()
    image: ImageSize | None = None


@attrs.frozen
class SegmentSpec:
    parts: tuple[Part, ...]


@attrs.frozen
class RowCase:
    segments: tuple[SegmentSpec, ...]
    cap: int | None
    family: Literal["qwen3_vl", "qwen2_5_vl"] = "qwen3_vl"


@functools.cache
def _tiny(family: str) -> Any:
    from coordexp.data.tiny import BUILDERS

    return BUILDERS[family](seed=0)


def _image_part(processor: Any, size: ImageSize) -> dict[str, Any]:
    from PIL import Image

    image = Image.new("RGB", (size.width, size.height), _IMAGE_COLOUR)
    enc = processor(text=["<|vision_start|><|image_pad|><|vision_end|>"], images=[image], return_tensors="pt")
    return {k: enc[k] for k in ("input_ids", "mm_token_type_ids", "pixel_values", "image_grid_thw")}


def _text_part(processor: Any, tokens: tuple[int, ...], where: str) -> dict[str, Any]:
    import torch

    tok = processor.tokenizer
    reserved = set(tok.convert_tokens_to_ids(list(_VISION_TOKENS)))
    bad = [t for t in tokens if t in reserved or not 0 <= t < len(tok)]
    if bad:
        raise SpecError(
            f"pack_row fixture {where}: token ids {bad} are vision markers or outside the vocabulary"
        )
    ids = torch.tensor([list(tokens)], dtype=torch.long)
    return {"input_ids": ids, "mm_token_type_ids": torch.zeros_like(ids)}


def _segment(processor: Any, spec: SegmentSpec, index: int) -> Any:
    import torch

    from coordexp.learn.losses import IGNORE_INDEX
    from coordexp.learn.packed import Segment

    encoded = []
    for j, part in enumerate(spec.parts):
        where = f"segment {index} part {j}"
        if (part.image is None) == (not part.tokens):
            raise SpecError(f"pack_row fixture {where}: give exactly one of `tokens` (non-empty) or `image`")
        if part.image is not None:
            encoded.append(_image_part(processor, part.image))
        else:
            encoded.append(_text_part(processor, part.tokens, where))
    images = [e for e in encoded if "pixel_values" in e]
    ids = torch.cat([e["input_ids"][0] for e in encoded])
    empty = torch.zeros(0, dtype=torch.long)
    return Segment(
        key=f"seg{index}",
        input_ids=ids,
        mm_token_type_ids=torch.cat([e["mm_token_type_ids"][0].to(torch.long) for e in encoded]),
        pixel_values=torch.cat([e["pixel_values"] for e in images]) if images else None,
        image_grid_thw=torch.cat([e["image_grid_thw"] for e in images]) if images else None,
        labels=torch.full_like(ids, IGNORE_INDEX),
        ce_weights=torch.zeros(ids.numel()),
        coord_positions=empty,
        coord_bins=empty,
        coord_is_prefix=torch.zeros(0, dtype=torch.bool),
        coord_weights=torch.zeros(0),
    )


def _image_data(row: Any, segments: list[Any]) -> dict[str, Any]:
    import torch

    own = [s for s in segments if s.pixel_values is not None]
    if not own:
        return {"image_grid_thw": None, "pixel_values_shape": None}
    grid, pixels = row.inputs["image_grid_thw"], row.inputs["pixel_values"]
    return {
        "image_grid_thw": grid.tolist(),
        "pixel_values_shape": list(pixels.shape),
        "segment_pixel_rows": [0 if s.pixel_values is None else s.pixel_values.shape[0] for s in segments],
        "images_in_segment_order": torch.equal(grid, torch.cat([s.image_grid_thw for s in own]))
        and torch.equal(pixels, torch.cat([s.pixel_values for s in own])),
    }


def _run_one(case: RowCase) -> dict[str, Any]:
    from coordexp.learn.packed import pack_segments

    tiny = _tiny(case.family)
    segments = [_segment(tiny.processor, spec, i) for i, spec in enumerate(case.segments)]
    try:
        row = pack_segments(segments, model=tiny.model, cap=case.cap)
    except PackingError as exc:
        return expected_error(exc)
    pos = row.inputs["position_ids"]
    text, mrope = pos[0, 0], pos[1:, 0]
    return {
        "row_length": int(row.inputs["input_ids"].shape[1]),
        "segment_lengths": list(row.segment_lengths),
        "cu_seqlens": list(row.cu_seqlens),
        "input_keys": sorted(row.inputs),
        "attention_mask": "attention_mask" in row.inputs,
        "position_ids_shape": list(pos.shape),
        "text_positions": text.tolist(),
        "mrope_rows": mrope.tolist(),
        "mrope_equals_text": bool((mrope == text).all()),
        "token_types": row.inputs["mm_token_type_ids"][0].tolist(),
        **_image_data(row, segments),
    }


def _structure(data: Any) -> RowCase:
    try:
        return structure(data, RowCase)
    except cattrs.BaseValidationError as exc:
        raise SpecError(f"malformed pack_row fixture input: {cattrs.transform_error(exc)}") from exc


def run(data: dict[str, Any]) -> Any:
    return each_case(data, lambda c: _run_one(_structure(c)), transition=TRANSITION)
