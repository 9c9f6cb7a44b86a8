"""The learner's current weights as a folder a vLLM engine reloads: merged full weights, or the LoRA adapter.

Why it looks the way it does:
- Full weights are the base checkpoint's tensors under the base checkpoint's names, with every LoRA/DoRA
  (and trainable-token) delta merged in: what ``merge_and_unload`` would save, so vLLM's
  ``reload_weights(weights_path=...)`` loads it like the checkpoint it started from. The tied ``lm_head``
  is left out, as ``save_pretrained`` leaves it out.
- The training model is never left changed: each adapted layer is merged alone, its merged weight copied
  to CPU, then unmerged and its base weight restored bit for bit from a copy of that one layer (an
  unmerge subtracts in floating point and is not exact). Peak extra memory is one layer, not one model.
- ``weights_fingerprint`` hashes the trainable tensors, so a backend syncs only after a step that changed them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from safetensors.torch import save_file

from coordexp.learn.model import unwrap
from coordexp.learn.tuner import trainable_parameters

WEIGHTS_FILE = "model.safetensors"


def _peft(model: torch.nn.Module):
    inner = getattr(model, "module", model)
    return inner if hasattr(inner, "get_base_model") else None


def weights_fingerprint(model: torch.nn.Module) -> str:
    """A digest of every trainable tensor (names, shapes and bytes): equal digests, equal weights."""
    digest = hashlib.blake2b(digest_size=16)
    for name, p in trainable_parameters(model):
        t = p.detach().to("cpu").contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _merged_layers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Base-model module name -> its merged weight (CPU), for every PEFT-adapted layer; the model is restored."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    peft = _peft(model)
    base = peft.get_base_model()
    merged: dict[str, torch.Tensor] = {}
    for name, module in base.named_modules():
        if not isinstance(module, BaseTunerLayer) or module.merged:
            continue
        layer = module.get_base_layer()
        weight = layer.weight
        before = weight.detach().clone()
        try:
            module.merge(safe_merge=True)
            merged[name] = weight.detach().to("cpu", copy=True)
        finally:
            if module.merged:
                module.unmerge()
            with torch.no_grad():
                weight.copy_(before)
    return merged


def merged_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint-named CPU tensors of the model with its adapters merged (the model itself is unchanged)."""
    inner = unwrap(model)
    merged = _merged_layers(model) if _peft(model) is not None else {}
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for key, tensor in inner.state_dict().items():
            if ".lora_" in key or "lora_magnitude_vector" in key or ".token_adapter." in key:
                continue
            clean = key.replace(".base_layer.", ".")
            module, _, leaf = clean.rpartition(".")
            if leaf == "weight" and module in merged:
                out[clean] = merged[module]
            else:
                out[clean] = tensor.detach().to("cpu", copy=True).contiguous()
    if getattr(inner.config, "tie_word_embeddings", False) or getattr(
        getattr(inner.config, "text_config", None), "tie_word_embeddings", False
    ):
        out.pop("lm_head.weight", None)
    return out


def save_merged_weights(model: torch.nn.Module, folder: Path) -> Path:
    """Write the merged full weights to ``folder/model.safetensors`` (replacing an earlier export)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(merged_state_dict(model), str(tmp), metadata={"format": "pt"})
    tmp.replace(folder / WEIGHTS_FILE)
    return folder


def save_adapter(model: torch.nn.Module, folder: Path) -> Path:
    """Write the PEFT adapter (``adapter_config.json`` + weights) to ``folder``, as vLLM's LoRA loader reads it."""
    peft = _peft(model)
    if peft is None:
        raise ValueError("adapter sync needs a LoRA/DoRA model (tuner.train_type: lora)")
    folder.mkdir(parents=True, exist_ok=True)
    peft.save_pretrained(str(folder))
    return folder
