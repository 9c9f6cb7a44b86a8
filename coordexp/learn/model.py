"""Loading a Qwen-VL checkpoint for training: processor, coord vocabulary, dtype, adapters.

One code path serves the tiny offline model (tests, CPU demos) and real checkpoints: the tiny one is
built by ``coordexp.data.tiny`` and, once saved, is an ordinary checkpoint directory. Loading never
touches the network (``local_files_only=True``).

Processors are image-only on purpose (``coordexp.data.processors`` says why).

The coord vocabulary (``<|coord_0|>``..``<|coord_999|>``) is checked at load time. A checkpoint
without it gets the 1000 tokens appended (as ordinary, non-special tokens, so decoding with
``skip_special_tokens`` keeps them), its embeddings resized and, when the checkpoint ties input and
output embeddings, re-tied. An untied checkpoint is NOT forced to tie: that would throw away its
trained ``lm_head``. Under LoRA the added rows train as PEFT trainable tokens (see
``coordexp.learn.tuner``), since frozen near-identical rows could never separate the 1000 bins.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from transformers import PreTrainedModel, Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

from coordexp.config.schema_model import DEMO_MODEL, TINY_MODEL, ModelConfig, TunerConfig
from coordexp.core.coords import COORD_TOKENS
from coordexp.data.processors import ImageOnlyQwen2_5VLProcessor, ImageOnlyQwen3VLProcessor
from coordexp.data.tiny import build_demo_qwen3vl, build_tiny_qwen3vl
from coordexp.errors import ConfigError, TokenizerError
from coordexp.learn.attention import attn_implementation_for

# Config keys this module reads (checked by the key-reach test, coordexp.bind.reach).
CONFIG_READS = (
    "model.model",
    "model.torch_dtype",
    "model.attn_impl",
    "model.max_pixels",
)

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# Seed of the tiny model that `model.model: tiny` loads; tests that need another one build it directly.
TINY_SEED = 0
# Fixed seed for the (tiny-noise) initialisation of added coord rows, so a load is reproducible
# without touching the caller's RNG stream.
_RESIZE_SEED = 1000


@attrs.frozen
class Family:
    """What differs between the supported model families."""

    model_type: str  # config.json "model_type"
    model_class: type[PreTrainedModel]
    processor_class: type


FAMILIES = {
    f.model_type: f
    for f in (
        Family("qwen3_vl", Qwen3VLForConditionalGeneration, ImageOnlyQwen3VLProcessor),
        Family("qwen2_5_vl", Qwen2_5_VLForConditionalGeneration, ImageOnlyQwen2_5VLProcessor),
    )
}


@attrs.frozen(eq=False)
class LoadedModel:
    """A model ready for the learner and the processor whose ids it was resized to."""

    model: torch.nn.Module  # a PeftModel when tuner.train_type is lora
    processor: Any
    coord_ids: tuple[int, ...]  # vocab id of <|coord_k|> at index k
    added_coord_tokens: int  # 0 when the checkpoint already had the coord vocabulary
    family: str  # model_type


def family_of(path: str | Path) -> Family:
    """The family of the checkpoint in ``path``, from its config.json ``model_type``."""
    config_file = Path(path) / "config.json"
    if not config_file.is_file():
        raise ConfigError(
            f"model.model: {path} is not a checkpoint directory (no config.json); point it at a local "
            f"Qwen3-VL / Qwen2.5-VL checkpoint or use `{TINY_MODEL}`"
        )
    model_type = json.loads(config_file.read_text(encoding="utf-8")).get("model_type")
    if model_type not in FAMILIES:
        raise ConfigError(
            f"model.model: {path} has model_type {model_type!r}; supported: {sorted(FAMILIES)}"
        )
    return FAMILIES[model_type]


def coord_token_ids(tokenizer: Any) -> tuple[int, ...] | None:
    """Ids of the 1000 coord tokens in bin order, or None when the vocabulary lacks any of them."""
    unk = getattr(tokenizer, "unk_token_id", None)
    ids = tokenizer.convert_tokens_to_ids(list(COORD_TOKENS))
    if any(i is None or i == unk for i in ids):
        return None
    if len(set(ids)) != len(ids):
        raise TokenizerError("coord tokens map to duplicate ids; the tokenizer's added vocabulary is corrupt")
    return tuple(ids)


def ensure_coord_vocab(tokenizer: Any) -> int:
    """Add the coord tokens when missing; returns how many were added (0 or 1000).

    A partial vocabulary (some coord tokens present) is an error: appending the rest would give bins
    non-contiguous ids next to an unknown, possibly trained, subset.
    """
    if coord_token_ids(tokenizer) is not None:
        return 0
    present = [t for t in COORD_TOKENS if t in tokenizer.get_vocab()]
    if present:
        raise TokenizerError(
            f"tokenizer has {len(present)} of the {len(COORD_TOKENS)} coord tokens (e.g. {present[0]}); "
            "expand it from a clean base checkpoint"
        )
    added = tokenizer.add_tokens(list(COORD_TOKENS), special_tokens=False)
    if added != len(COORD_TOKENS) or coord_token_ids(tokenizer) is None:
        raise TokenizerError(f"adding the coord tokens added {added} of {len(COORD_TOKENS)}")
    return added


def load_processor(path: str | Path, *, expand_coord_vocab: bool = True) -> Any:
    """The image-only processor of a local checkpoint, with the coord vocabulary ensured.

    Adding the tokens is deterministic (same base tokenizer -> same ids), so a rollout backend that
    loads only the processor agrees with the learner's resized model.
    """
    family = family_of(path)
    try:
        processor = family.processor_class.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.model: cannot load a processor from {path}: {exc}") from exc
    if expand_coord_vocab:
        ensure_coord_vocab(processor.tokenizer)
    return processor


def _embeddings_tied(model: PreTrainedModel) -> bool:
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def resize_for_coord_vocab(model: PreTrainedModel, vocab_size: int) -> None:
    """Grow the embedding table(s) to ``vocab_size`` and keep the checkpoint's tying.

    New rows start at the mean of the old rows (transformers' mean resizing, a tiny seeded
    perturbation), so the added tokens do not shift the model's existing predictions.
    """
    was_tied = _embeddings_tied(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(_RESIZE_SEED)
        model.resize_token_embeddings(vocab_size, mean_resizing=True)
    if was_tied:
        model.tie_weights()
        if not _embeddings_tied(model):
            raise TokenizerError("embeddings were tied before resizing and could not be re-tied")


def _from_checkpoint(path: str, dtype: torch.dtype, attn_impl: str) -> tuple[PreTrainedModel, Any, str]:
    family = family_of(path)
    processor = load_processor(path, expand_coord_vocab=False)
    try:
        model = family.model_class.from_pretrained(
            path, local_files_only=True, dtype=dtype, attn_implementation=attn_implementation_for(attn_impl)
        )
    except (OSError, ValueError) as exc:
        raise ConfigError(f"model.model: cannot load weights from {path}: {exc}") from exc
    return model, processor, family.model_type


def _builtin(name: str, dtype: torch.dtype, attn_impl: str) -> tuple[PreTrainedModel, Any, str]:
    """``tiny`` (the test model) or ``tiny-demo`` (the demo's), built offline from the fixture tokenizer."""
    build = build_demo_qwen3vl if name == DEMO_MODEL else build_tiny_qwen3vl
    tiny = build(seed=TINY_SEED)
    tiny.model.set_attn_implementation(attn_implementation_for(attn_impl))
    return tiny.model.to(dtype), tiny.processor, "qwen3_vl"


def load_model(
    path_or_tiny: str | Path, *, dtype: str | torch.dtype, tuner_cfg: TunerConfig, attn_impl: str
) -> LoadedModel:
    """Load a local checkpoint (or build ``tiny``), ensure the coord vocabulary, attach the tuner."""
    from coordexp.learn.tuner import apply_tuner

    torch_dtype = DTYPES[dtype] if isinstance(dtype, str) else dtype
    if str(path_or_tiny) in (TINY_MODEL, DEMO_MODEL):
        model, processor, family = _builtin(str(path_or_tiny), torch_dtype, attn_impl)
    else:
        model, processor, family = _from_checkpoint(str(path_or_tiny), torch_dtype, attn_impl)
    added = ensure_coord_vocab(processor.tokenizer)
    if added or model.get_input_embeddings().num_embeddings < len(processor.tokenizer):
        resize_for_coord_vocab(model, len(processor.tokenizer))
    coord_ids = coord_token_ids(processor.tokenizer)
    if coord_ids is None or max(coord_ids) >= model.get_input_embeddings().num_embeddings:
        raise TokenizerError(f"coord ids do not fit the embedding table of {path_or_tiny}")
    model = apply_tuner(model, tuner_cfg, new_token_ids=coord_ids if added else ())
    return LoadedModel(model, processor, coord_ids, added, family)


def limit_image_pixels(processor: Any, max_pixels: int) -> None:
    """Resize images above ``max_pixels`` (area) before patching, as ``model.max_pixels`` asks.

    The Qwen-VL image processors keep the pixel budget as ``size.longest_edge`` (an area, despite the name);
    the smallest allowed area is kept unless it exceeds the new budget.
    """
    ip = processor.image_processor
    shortest = ip.size.get("shortest_edge") if hasattr(ip.size, "get") else ip.size.shortest_edge
    ip.size = {"shortest_edge": min(shortest or max_pixels, max_pixels), "longest_edge": max_pixels}


def load_model_from_config(model_cfg: ModelConfig, tuner_cfg: TunerConfig) -> LoadedModel:
    """``load_model`` with the ``model.*`` section's values."""
    loaded = load_model(
        model_cfg.model, dtype=model_cfg.torch_dtype, tuner_cfg=tuner_cfg, attn_impl=model_cfg.attn_impl
    )
    if model_cfg.max_pixels is not None:
        limit_image_pixels(loaded.processor, model_cfg.max_pixels)
    return loaded


def unwrap(model: torch.nn.Module) -> PreTrainedModel:
    """The transformers model under DDP and PEFT wrappers."""
    inner = getattr(model, "module", model)  # DistributedDataParallel
    if hasattr(inner, "get_base_model"):  # peft.PeftModel
        inner = inner.get_base_model()
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"expected a transformers model (optionally DDP/PEFT-wrapped), got {type(inner)}")
    return inner


def coord_ids_tensor(coord_ids: Sequence[int], device: torch.device | None = None) -> torch.Tensor:
    """The coord ids as the long tensor the loss functions take."""
    return torch.tensor(list(coord_ids), dtype=torch.long, device=device)
