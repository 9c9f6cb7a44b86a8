"""Which parameters train: LoRA / DoRA adapters or full fine-tuning, from ``tuner.*``.

A Qwen-VL model has three parts: the vision tower, the aligner (the merger(s) that project vision
features into the language model) and the language model. ``tuner.freeze_vit`` /
``freeze_aligner`` / ``freeze_llm`` say which parts may change. With ``train_type: lora`` the
adapters go on the linear layers of the parts that are not frozen (``all-linear``, or the named
module kinds in ``tuner.target_modules``), and every base weight stays frozen; with ``full`` the
unfrozen parts train directly. ``lm_head`` never gets an adapter: it is tied to the input embeddings
in the small Qwen-VL models, and an adapter there would untie them in effect.

Target modules are resolved here to full module names and handed to PEFT as an explicit list. PEFT's
own ``all-linear`` would also adapt the vision tower, which is frozen by default.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence

import torch

from coordexp.config.schema_model import TunerConfig
from coordexp.errors import ConfigError

# Config keys this module reads (checked by the key-reach test, coordexp.bind.reach).
CONFIG_READS = (
    "tuner.train_type",
    "tuner.lora_rank",
    "tuner.lora_alpha",
    "tuner.lora_dropout",
    "tuner.target_modules",
    "tuner.use_dora",
    "tuner.freeze_vit",
    "tuner.freeze_aligner",
    "tuner.freeze_llm",
)

ALL_LINEAR = "all-linear"
VISION, ALIGNER, LLM, HEAD = "vision", "aligner", "llm", "head"
_ALIGNER_MARKERS = (".merger.", ".deepstack_merger_list.")


def part_of(name: str) -> str:
    """Which part a parameter or module name belongs to (Qwen3-VL / Qwen2.5-VL naming).

    Works on wrapped names too (``base_model.model.model.visual...`` under PEFT, ``module.`` under DDP).
    """
    dotted = f".{name}."
    if ".lm_head." in dotted:
        return HEAD
    if ".visual." in dotted:
        return ALIGNER if any(m in dotted for m in _ALIGNER_MARKERS) else VISION
    return LLM


def trainable_parts(cfg: TunerConfig) -> frozenset[str]:
    """Parts whose weights (full) or linear layers (lora) may change."""
    frozen = {VISION: cfg.freeze_vit, ALIGNER: cfg.freeze_aligner, LLM: cfg.freeze_llm}
    return frozenset(part for part, is_frozen in frozen.items() if not is_frozen)


def _linear_modules(model: torch.nn.Module) -> Iterator[tuple[str, torch.nn.Linear]]:
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            yield name, module


def target_module_names(model: torch.nn.Module, cfg: TunerConfig) -> list[str]:
    """Full names of the linear layers that get adapters."""
    parts = trainable_parts(cfg)
    kinds = set(cfg.target_modules)
    every = ALL_LINEAR in kinds
    names = [
        name
        for name, _ in _linear_modules(model)
        if part_of(name) in parts and (every or name.rsplit(".", 1)[-1] in kinds)
    ]
    if not names:
        raise ConfigError(
            f"tuner.target_modules {list(cfg.target_modules)} matches no linear layer in the trainable parts "
            f"{sorted(parts)}; use `{ALL_LINEAR}` or module names such as q_proj, v_proj"
        )
    return names


def _apply_lora(model: torch.nn.Module, cfg: TunerConfig, new_token_ids: Sequence[int]) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target_module_names(model, cfg),
        use_dora=cfg.use_dora,
        bias="none",
        # Rows just added to the vocabulary are mean-initialised and identical up to noise; frozen, the
        # 1000 coord bins could never be told apart. PEFT trains exactly these rows (tied lm_head too).
        trainable_token_indices={"embed_tokens": list(new_token_ids)} if new_token_ids else None,
    )
    for p in model.parameters():
        p.requires_grad_(False)
    with warnings.catch_warnings():
        # peft reads transformers' deprecated `is_gradient_checkpointing` while wrapping; the rename is
        # theirs to finish, and the warning would otherwise fire on every LoRA/DoRA load.
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        return get_peft_model(model, lora)


def _apply_full(model: torch.nn.Module, cfg: TunerConfig) -> torch.nn.Module:
    parts = trainable_parts(cfg)
    if not parts:
        raise ConfigError("tuner.freeze_vit, freeze_aligner and freeze_llm are all true: nothing would train")
    for name, p in model.named_parameters():
        # The tied lm_head follows the embeddings, which belong to the language model.
        part = LLM if part_of(name) == HEAD else part_of(name)
        p.requires_grad_(part in parts)
    return model


def apply_tuner(model: torch.nn.Module, cfg: TunerConfig, *, new_token_ids: Sequence[int] = ()) -> torch.nn.Module:
    """Freeze / wrap ``model`` as ``tuner.*`` says; returns the model to train (maybe a PeftModel).

    ``new_token_ids`` are vocabulary rows added at load time: under LoRA they train as PEFT trainable
    tokens; under full fine-tuning the embeddings train anyway (unless the LLM is frozen).
    """
    if cfg.train_type == "lora":
        return _apply_lora(model, cfg, new_token_ids)
    return _apply_full(model, cfg)


def trainable_parameters(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters that receive gradients, in a stable order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def upcast_trainable(model: torch.nn.Module) -> int:
    """Trainable parameters to float32 in place (tied weights stay tied); returns how many were cast.

    The learner's fp32 master weights (``coordexp.learn.learner``); the parameter objects are kept, so
    call it before building the optimizer and before wrapping in DistributedDataParallel.
    """
    cast = 0
    for _, p in trainable_parameters(model):
        if p.dtype != torch.float32:
            p.data = p.data.float()
            cast += 1
    return cast
