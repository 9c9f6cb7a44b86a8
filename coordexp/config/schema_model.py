"""``model.*`` and ``tuner.*``: which checkpoint is trained and which of its parameters move."""

from __future__ import annotations

from typing import Literal

import attrs

from coordexp.config._fields import knob

TINY_MODEL = "tiny"


@attrs.frozen
class ModelConfig:
    model: str = knob(
        help=f"Checkpoint directory or hub id, or `{TINY_MODEL}` for the tiny Qwen3-VL built offline (CPU demos, tests)."
    )
    torch_dtype: Literal["bfloat16", "float16", "float32"] = knob("bfloat16", help="Dtype the weights are loaded in.")
    attn_impl: Literal["eager", "sdpa", "flash_attention_2"] = knob("sdpa", help="Attention kernel.")
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
