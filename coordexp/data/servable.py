"""What a checkpoint folder needs, beyond what transformers saves, so that vLLM can serve it.

vLLM builds the stock Qwen-VL processor (image and video) from the model folder and refuses a folder
without a video processor config ("Can't load video processor"); coordexp's processors are image-only
(``coordexp.data.processors`` says why), so their ``save_pretrained`` writes none. The config written here
describes the video processor the stock processor would have, with the image processor's sizes, so the
folder loads in vLLM (and in transformers with torchvision) while coordexp itself never feeds video and
still loads the folder image-only.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

VIDEO_CONFIG_FILE = "video_preprocessor_config.json"
# model_type -> (video processor class, stock processor class) of the families coordexp trains
_VIDEO_PROCESSORS = {
    "qwen3_vl": ("Qwen3VLVideoProcessor", "Qwen3VLProcessor"),
    "qwen2_5_vl": ("Qwen2VLVideoProcessor", "Qwen2_5_VLProcessor"),
}
_SHARED_KEYS = ("patch_size", "temporal_patch_size", "merge_size", "image_mean", "image_std", "do_convert_rgb",
                "do_normalize", "do_rescale", "rescale_factor")


def _size(image_processor: Any) -> dict[str, int]:
    size = image_processor.size
    get = size.get if hasattr(size, "get") else lambda k: getattr(size, k, None)
    return {"shortest_edge": int(get("shortest_edge")), "longest_edge": int(get("longest_edge"))}


def video_processor_config(image_processor: Any, model_type: str) -> dict[str, Any]:
    """The video processor config matching ``image_processor`` for a ``model_type`` folder."""
    if model_type not in _VIDEO_PROCESSORS:
        raise ValueError(f"no video processor known for model_type {model_type!r}; known: {sorted(_VIDEO_PROCESSORS)}")
    video_cls, processor_cls = _VIDEO_PROCESSORS[model_type]
    out: dict[str, Any] = {k: getattr(image_processor, k) for k in _SHARED_KEYS if hasattr(image_processor, k)}
    out.update(size=_size(image_processor), video_processor_type=video_cls, processor_class=processor_cls)
    return json.loads(json.dumps(out))  # plain JSON types (tuples become lists)


def write_video_processor_config(processor: Any, model_type: str, directory: str | Path) -> Path:
    """Write ``video_preprocessor_config.json`` next to a saved processor; returns its path."""
    path = Path(directory) / VIDEO_CONFIG_FILE
    cfg = video_processor_config(processor.image_processor, model_type)
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
