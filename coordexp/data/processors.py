"""The image-only Qwen-VL processors: how every checkpoint, real or tiny, turns images and text into ids.

Image-only on purpose. The stock Qwen-VL processors also build a video processor, which needs
torchvision; coordexp never feeds video, so depending on torchvision would only make CPU machines
unable to load a checkpoint (and ``AutoProcessor`` silently returns a bare tokenizer there).

They live on the data side, beside the tokenizer, so that the tiny model builder
(``coordexp.data.tiny``) and checkpoint loading (``coordexp.learn.model``) share them while the
dependency runs one way only: ``learn`` imports ``data``, never the reverse.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor, Qwen3VLProcessor


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """Qwen3-VL processor without a video processor (no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )


class ImageOnlyQwen2_5VLProcessor(Qwen2_5_VLProcessor):
    """Qwen2.5-VL processor without a video processor (no torchvision needed)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )
