"""``model.*`` and ``tuner.*``: which checkpoint is trained and which of its parameters move."""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob

TINY_MODEL = "tiny"
DEMO_MODEL = "tiny-demo"


@attrs.frozen
class ModelConfig:
    model: str = knob(
        help=f"Checkpoint directory or hub id; `{TINY_MODEL}` builds the tiny test Qwen3-VL offline, `{DEMO_MODEL}` the "
        "slightly larger one the CPU demo learns with."
    )
    torch_dtype: Literal["bfloat16", "float16", "float32"] = knob("bfloat16", help="Dtype the weights are loaded in.")
    attn_impl: Literal["eager", "sdpa", "flash_attention_2", "packed", "packed_sdpa", "packed_torch_varlen", "packed_fa_varlen"] = knob(
        "packed",
        help="Attention kernel of the language model. `packed`: attention within each segment of a packed row, never an "
        "L x L mask (flash-attn varlen on CUDA when installed, else torch varlen where it exists, else one causal SDPA "
        "per segment; everything that is not a packed row runs as `sdpa`); `packed_fa_varlen` / `packed_torch_varlen` / "
        "`packed_sdpa` pin one of those kernels (the first two need CUDA and bf16/fp16 compute). The vision tower keeps "
        "its own per-image `sdpa` under every `packed*` value. `sdpa` / `eager` build a dense block-diagonal mask for a "
        "packed row (quadratic in the pack; warned once on CUDA); `flash_attention_2` is transformers' own.",
    )
    max_pixels: int | None = knob(None, help="Resize images above this many pixels; null = never resize (the norm1000 data is pre-resized).")


@attrs.frozen
class TunerConfig:
    train_type: Literal["lora", "full"] = knob("lora", help="`lora`: train adapters (LoRA/DoRA); `full`: train all unfrozen weights.")
    lora_rank: int = knob(16, help="LoRA rank r (> 0).")
    lora_alpha: int = knob(32, help="LoRA alpha (> 0).")
    lora_dropout: float = knob(0.05, help="LoRA dropout in [0, 1).")
    target_modules: tuple[str, ...] = knob(
        ("all-linear",), help="Modules that get adapters; `all-linear` = every linear layer of the trainable parts."
    )
    use_dora: bool = knob(False, help="Use DoRA (weight-decomposed LoRA) adapters.")
    freeze_vit: bool = knob(True, help="Keep the vision tower frozen.")
    freeze_aligner: bool = knob(False, help="Keep the vision-language merger (aligner) frozen.")
    freeze_llm: bool = knob(False, help="Keep the language model frozen.")
