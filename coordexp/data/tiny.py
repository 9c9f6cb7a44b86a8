"""Tiny Qwen3-VL and Qwen2.5-VL models built fully offline from the fixture tokenizer.

    python -m coordexp.data.tiny --out /some/dir [--family qwen3_vl|qwen2_5_vl] [--seed 0]

They are real transformers models (hidden 32, 2 layers, ~0.2M parameters) with the real classes,
processors and M-RoPE, so tests exercise exactly the code that trains a 2B model; only the sizes
differ. Weights are a pure function of the seed (built under a private RNG state, so building one
does not disturb the caller's random stream), and a saved one loads through
``coordexp.learn.model.load_model`` like any downloaded checkpoint.

Images are resized to between 1 and 16 merged image tokens, so a test image of a few dozen pixels
costs a handful of tokens and images of different sizes give segments of different lengths
(``coordexp.learn.tiny_segments`` turns ``tiny_samples`` into supervised segments).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

import attrs
import torch
from PIL import Image, ImageDraw
from tokenizers import Tokenizer
from transformers import (
    PreTrainedModel,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Tokenizer,
    Qwen2VLImageProcessorPil,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)

from coordexp.core.coordjson import GeomType, GTObject
from coordexp.data.processors import ImageOnlyQwen2_5VLProcessor, ImageOnlyQwen3VLProcessor
from coordexp.data.servable import write_video_processor_config
from coordexp.data.tiny_tokenizer import ENDOFTEXT, IM_END, SPECIALS
from coordexp.data.tokenizer import fixture_tokenizer_path, load_tokenizer
from coordexp.errors import ConfigError

HIDDEN = 32
DEMO_HIDDEN, DEMO_HEAD_DIM = 64, 32  # the demo model (build_demo_qwen3vl)
HEAD_DIM = 8  # mrope_section must sum to HEAD_DIM // 2
# The smallest head size vLLM's CPU attention runs (it supports 32, 64, 80, ...); head_dim 8 loads in vLLM but
# fails at the first request. ``build_servable_tiny_qwen3vl`` is the tiny model with it.
SERVABLE_HEAD_DIM = 32
MIN_MERGED_TOKENS, MAX_MERGED_TOKENS = 1, 16
TEXT_INIT_STD = 0.2


@attrs.frozen(eq=False)
class TinyModel:
    model: PreTrainedModel
    processor: Any
    path: Path | None  # where it was saved, if it was


def fixture_tokenizer(*, coord_vocab: bool = True) -> Qwen2Tokenizer:
    """The committed tiny tokenizer; ``coord_vocab=False`` strips the 1000 coord tokens.

    The stripped one stands in for a base Qwen checkpoint that was never expanded, to test that
    loading adds the vocabulary.
    """
    path = fixture_tokenizer_path()
    if coord_vocab:
        return load_tokenizer(path)
    data = json.loads((path / "tokenizer.json").read_text(encoding="utf-8"))
    data["added_tokens"] = [t for t in data["added_tokens"] if not t["content"].startswith("<|coord_")]
    tok = Qwen2Tokenizer(
        tokenizer_object=Tokenizer.from_str(json.dumps(data)),
        unk_token=ENDOFTEXT,
        eos_token=IM_END,
        pad_token=ENDOFTEXT,
    )
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS[1:])})
    tok.chat_template = load_tokenizer(path).chat_template
    return tok


def _image_processor(patch: int, merge: int) -> Qwen2VLImageProcessorPil:
    unit = (patch * merge) ** 2  # pixels per merged image token
    return Qwen2VLImageProcessorPil(
        patch_size=patch,
        temporal_patch_size=2,
        merge_size=merge,
        size={"shortest_edge": MIN_MERGED_TOKENS * unit, "longest_edge": MAX_MERGED_TOKENS * unit},
        image_mean=[0.5] * 3,
        image_std=[0.5] * 3,
    )


def _width_scale(hidden: int) -> int:
    """How many times wider than the default the language model is (head_dim and M-RoPE scale with it)."""
    if hidden < HIDDEN or hidden % HIDDEN:
        raise ConfigError(f"tiny model hidden size must be a positive multiple of {HIDDEN}, got {hidden}")
    return hidden // HIDDEN


def _text_config(
    tok: Qwen2Tokenizer, mrope_section: list[int], hidden: int = HIDDEN, head_dim: int | None = None
) -> dict[str, Any]:
    """``head_dim`` None: HEAD_DIM times the width scale; M-RoPE sections scale with the head size."""
    ids = tok.convert_tokens_to_ids
    head_dim = HEAD_DIM * _width_scale(hidden) if head_dim is None else head_dim
    if head_dim < HEAD_DIM or head_dim % HEAD_DIM:
        raise ConfigError(f"tiny model head_dim must be a positive multiple of {HEAD_DIM}, got {head_dim}")
    scale = head_dim // HEAD_DIM
    return dict(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=head_dim,
        hidden_act="silu",
        max_position_embeddings=4096,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [scale * m for m in mrope_section]},
        bos_token_id=None,  # the real Qwen default (151643) is outside a tiny vocabulary
        eos_token_id=ids(IM_END),
        pad_token_id=ids(ENDOFTEXT),
        tie_word_embeddings=True,
        # Wider than the usual 0.02: with tied 32-d embeddings that small, logits stay within about +-0.6
        # and no adapter can move the loss far from uniform; trained Qwen embeddings are this large.
        initializer_range=TEXT_INIT_STD,
    )


def _vision_ids(tok: Qwen2Tokenizer) -> dict[str, int]:
    ids = tok.convert_tokens_to_ids
    return dict(
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
    )


def _qwen3vl_config(tok: Qwen2Tokenizer, hidden: int = HIDDEN, head_dim: int | None = None) -> Qwen3VLConfig:
    text = _text_config(tok, [2, 1, 1], hidden, head_dim)
    text["rope_parameters"]["mrope_interleaved"] = True
    vision = dict(
        depth=2, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_heads=4, in_channels=3, patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden, num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh",
    )  # fmt: skip
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_vision_ids(tok))


def _qwen2_5vl_config(tok: Qwen2Tokenizer, hidden: int = HIDDEN) -> Qwen2_5_VLConfig:
    vision = dict(
        depth=2, hidden_size=HIDDEN, intermediate_size=2 * HIDDEN, num_heads=4, in_channels=3, patch_size=14,
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden, window_size=56,
        fullatt_block_indexes=[1], hidden_act="silu",
    )  # fmt: skip
    return Qwen2_5_VLConfig(
        text_config=_text_config(tok, [1, 1, 2], hidden), vision_config=vision, tie_word_embeddings=True, **_vision_ids(tok)
    )


def _seeded(model_class: type[PreTrainedModel], config: Any, seed: int) -> PreTrainedModel:
    """Construct under a private RNG state: same seed -> bitwise-identical weights."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    return model.eval()


def _finish(model: PreTrainedModel, processor: Any, out_dir: str | Path | None) -> TinyModel:
    """Save when asked, with the video processor config vLLM needs (``coordexp.data.servable``)."""
    if out_dir is None:
        return TinyModel(model, processor, None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    write_video_processor_config(processor, model.config.model_type, out)
    return TinyModel(model, processor, out)


def build_tiny_qwen3vl(
    seed: int = 0,
    out_dir: str | Path | None = None,
    *,
    tokenizer: Qwen2Tokenizer | None = None,
    hidden: int = HIDDEN,
    head_dim: int | None = None,
) -> TinyModel:
    """A tiny Qwen3-VL (patch 16, merge 2, deepstack on both vision layers) and its processor.

    ``hidden`` widens the language model (a multiple of 32; heads stay 4, so head_dim grows) for
    benchmarks at a less trivial size; the vision tower keeps its width and projects to ``hidden``.
    ``head_dim`` sets the head size alone (None: 8 per 32 of width); see ``build_servable_tiny_qwen3vl``.
    """
    tok = tokenizer if tokenizer is not None else fixture_tokenizer()
    processor = ImageOnlyQwen3VLProcessor(
        image_processor=_image_processor(16, 2), tokenizer=tok, chat_template=tok.chat_template
    )
    model = _seeded(Qwen3VLForConditionalGeneration, _qwen3vl_config(tok, hidden, head_dim), seed)
    return _finish(model, processor, out_dir)


def build_servable_tiny_qwen3vl(seed: int = 0, out_dir: str | Path | None = None) -> TinyModel:
    """The tiny Qwen3-VL with heads of 32 (4 query, 2 KV), the smallest vLLM's CPU attention serves.

    The vLLM tests and ``python -m coordexp.bench rollout --backends`` use it, saved to a folder
    (``model.model: <folder>``); the default ``tiny`` model keeps its head_dim 8 so that the other tests'
    recorded losses do not move.
    """
    return build_tiny_qwen3vl(seed=seed, out_dir=out_dir, head_dim=SERVABLE_HEAD_DIM)


def build_tiny_qwen2_5vl(
    seed: int = 0, out_dir: str | Path | None = None, *, tokenizer: Qwen2Tokenizer | None = None, hidden: int = HIDDEN
) -> TinyModel:
    """A tiny Qwen2.5-VL (patch 14, merge 2, window attention in layer 0) and its processor (``hidden``: as Qwen3-VL)."""
    tok = tokenizer if tokenizer is not None else fixture_tokenizer()
    processor = ImageOnlyQwen2_5VLProcessor(
        image_processor=_image_processor(14, 2), tokenizer=tok, chat_template=tok.chat_template
    )
    model = _seeded(Qwen2_5_VLForConditionalGeneration, _qwen2_5vl_config(tok, hidden), seed)
    return _finish(model, processor, out_dir)


def _demo_config(tok: Qwen2Tokenizer) -> Qwen3VLConfig:
    """Language model 64 wide, 2 heads of 32 (what vLLM's CPU attention needs); vision 64 wide on 8-px patches."""
    text = _text_config(tok, [2, 1, 1])
    text.update(hidden_size=DEMO_HIDDEN, intermediate_size=2 * DEMO_HIDDEN, num_attention_heads=2,
                num_key_value_heads=1, head_dim=DEMO_HEAD_DIM, initializer_range=0.02)
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [6, 5, 5],
                               "mrope_interleaved": True}
    vision = dict(
        depth=2, hidden_size=DEMO_HIDDEN, intermediate_size=2 * DEMO_HIDDEN, num_heads=4, in_channels=3, patch_size=8,
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=DEMO_HIDDEN, num_position_embeddings=64,
        deepstack_visual_indexes=[0, 1], hidden_act="gelu_pytorch_tanh", initializer_range=0.02,
    )  # fmt: skip
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_vision_ids(tok))


def build_demo_qwen3vl(seed: int = 0, out_dir: str | Path | None = None) -> TinyModel:
    """The demo's Qwen3-VL (``model: tiny-demo``, about 0.54M parameters): small enough to learn the 64-px
    synthetic shapes on two CPU cores in minutes, large enough to localise them. A 64x64 image is 8x8 patches of
    8 px, 16 merged image tokens. The default ``tiny`` model stays the test model."""
    tok = fixture_tokenizer()
    processor = ImageOnlyQwen3VLProcessor(
        image_processor=_image_processor(8, 2), tokenizer=tok, chat_template=tok.chat_template
    )
    model = _seeded(Qwen3VLForConditionalGeneration, _demo_config(tok), seed)
    return _finish(model, processor, out_dir)


BUILDERS = {
    "qwen3_vl": build_tiny_qwen3vl,
    "qwen3_vl_servable": build_servable_tiny_qwen3vl,
    "qwen2_5_vl": build_tiny_qwen2_5vl,
}

PROMPT = "Detect every object. Answer with one JSON object of objects with desc and bbox_2d."
_DESCS = ("cat", "dog", "traffic light", "red car", "person", "cup")


def tiny_samples(n: int, *, seed: int, max_objects: int = 4) -> list[tuple[Image.Image, tuple[GTObject, ...]]]:
    """``n`` synthetic (image, GT objects) pairs of varied image sizes and answer lengths.

    Each image is a flat colour with one filled rectangle per object, so the pixels carry the boxes;
    sizes vary so that image-token counts (and segment lengths) differ between samples.
    """
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        w, h = rng.choice((32, 48, 64, 96, 128)), rng.choice((32, 48, 64, 96))
        img = Image.new("RGB", (w, h), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(img)
        objects = []
        for i in range(rng.randint(0, max_objects)):
            x1, x2 = sorted(rng.sample(range(1000), 2))
            y1, y2 = sorted(rng.sample(range(1000), 2))
            box = [x1 * w // 1000, y1 * h // 1000, x2 * w // 1000, y2 * h // 1000]
            draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)))
            objects.append(GTObject(i + 1, rng.choice(_DESCS), GeomType.BBOX, (x1, y1, x2, y2)))
        out.append((img, tuple(objects)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="checkpoint directory to write")
    parser.add_argument("--family", choices=sorted(BUILDERS), default="qwen3_vl")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    tiny = BUILDERS[args.family](seed=args.seed, out_dir=args.out)
    n = sum(p.numel() for p in tiny.model.parameters())
    print(f"{args.family} tiny model ({n} parameters) written to {tiny.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
