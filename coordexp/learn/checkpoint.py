"""Learner checkpoints: weights, optimizer, schedule, RNG states and the step counter.

Layout of a checkpoint directory::

    adapter/            PEFT adapter (adapter_config.json + adapter_model.safetensors), LoRA/DoRA runs
    model/              full weights via save_pretrained, full fine-tuning runs
    learner_state.pt    optimizer + scheduler state, torch RNG state(s)
    rng.json            python and numpy RNG states
    checkpoint.json     format version, step, which weights are present

Only what trains is written: an adapter run stores the adapter, not a copy of the frozen base. The RNG
states are part of the checkpoint because LoRA dropout (and any sampling) draws from them; restoring
them makes the next step after a resume bitwise identical to the step an uninterrupted run takes.
Everything loads with ``torch.load(weights_only=True)`` (RNG states are stored as plain lists and
tensors), so a checkpoint cannot run code on load.
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

from coordexp.data.servable import write_video_processor_config
from coordexp.errors import ConfigError
from coordexp.learn.learner import Learner
from coordexp.learn.model import unwrap

FORMAT = 1
ADAPTER_DIR, MODEL_DIR = "adapter", "model"
STATE_FILE, RNG_FILE, META_FILE = "learner_state.pt", "rng.json", "checkpoint.json"
COORD_MAP_FILE = "coord_tokens.json"


def _peft(model: torch.nn.Module) -> Any | None:
    inner = getattr(model, "module", model)
    return inner if hasattr(inner, "get_base_model") else None


def _rng_json() -> dict[str, Any]:
    version, state, gauss = random.getstate()
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
    }


def _restore_rng(data: dict[str, Any]) -> None:
    version, state, gauss = data["python"]
    random.setstate((version, tuple(state), gauss))
    name, keys, pos, has_gauss, cached = data["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(learner: Learner, directory: str | Path, *, full_weights_at_root: bool = False) -> Path:
    """Write ``learner``'s full training state into ``directory`` (created if needed).

    ``full_weights_at_root``: a full fine-tune whose weights ``export_pretrained`` already wrote at the
    folder's root; they are not written a second time.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    peft = _peft(learner.model)
    weights = ADAPTER_DIR if peft is not None else ("." if full_weights_at_root else MODEL_DIR)
    if peft is not None:
        peft.save_pretrained(str(out / ADAPTER_DIR))
    elif not full_weights_at_root:
        unwrap(learner.model).save_pretrained(str(out / MODEL_DIR))
    state = {
        "optimizer": learner.optimizer.state_dict(),
        "scheduler": learner.scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    torch.save(state, out / STATE_FILE)
    (out / RNG_FILE).write_text(json.dumps(_rng_json()), encoding="utf-8")
    meta = {"format": FORMAT, "step": learner.global_step, "weights": weights}
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return out


def export_pretrained(model: torch.nn.Module, processor: Any, coord_ids: Sequence[int], directory: str | Path) -> Path:
    """Write ``directory`` as a stock HF folder: full weights, processor/tokenizer/chat template, coord map.

    The folder is also servable by vLLM (its video processor config, ``coordexp.data.servable``): the
    colocate backend's full-weight sync loads exactly this folder.

    A LoRA/DoRA model is merged into a deep copy (the live, training model keeps its adapter and its
    exact weights), so ``from_pretrained(directory)`` and ``model.model: directory`` load the trained model
    without PEFT. ``coord_tokens.json`` maps bin k to its vocab id, so a consumer can check the vocabulary.
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    peft = _peft(model)
    if peft is not None:
        merged = copy.deepcopy(peft).merge_and_unload()
    else:
        merged = unwrap(model)
    merged.save_pretrained(str(out))
    processor.save_pretrained(str(out))
    write_video_processor_config(processor, merged.config.model_type, out)
    coord_map = {"format": 1, "tokens": "<|coord_k|>", "ids": list(coord_ids)}
    (out / COORD_MAP_FILE).write_text(json.dumps(coord_map) + "\n", encoding="utf-8")
    return out


def _load_adapter(model: torch.nn.Module, directory: Path) -> None:
    from peft import set_peft_model_state_dict

    peft = _peft(model)
    if peft is None:
        raise ConfigError(f"checkpoint {directory} holds a PEFT adapter but the model has none (tuner.train_type)")
    result = set_peft_model_state_dict(peft, load_file(str(directory / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise ConfigError(f"adapter in {directory} does not fit the model: {result.unexpected_keys[:3]} ...")


def _load_full(model: torch.nn.Module, directory: Path) -> None:
    inner = unwrap(model)
    files = sorted(directory.glob("*.safetensors"))
    if not files:
        raise ConfigError(f"checkpoint weights missing: no *.safetensors in {directory}")
    loaded: set[str] = set()
    for f in files:
        weights = load_file(str(f))
        result = inner.load_state_dict(weights, strict=False)
        if result.unexpected_keys:
            raise ConfigError(f"{f} has weights the model does not: {result.unexpected_keys[:3]} ...")
        loaded.update(weights)
    tied = set(getattr(inner, "_tied_weights_keys", None) or {})
    missing = set(inner.state_dict()) - loaded - tied
    if missing:
        raise ConfigError(f"checkpoint {directory} lacks weights: {sorted(missing)[:3]} ...")


def load_checkpoint(learner: Learner, directory: str | Path) -> None:
    """Restore a state written by ``save_checkpoint`` into a learner built the same way."""
    src = Path(directory)
    meta_file = src / META_FILE
    if not meta_file.is_file():
        raise ConfigError(f"{src} is not a coordexp checkpoint (no {META_FILE})")
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise ConfigError(f"checkpoint {src} has format {meta.get('format')}, this coordexp reads {FORMAT}")
    if meta["weights"] == ADAPTER_DIR:
        _load_adapter(learner.model, src / ADAPTER_DIR)
    else:
        _load_full(learner.model, src / meta["weights"])
    state = torch.load(src / STATE_FILE, map_location="cpu", weights_only=True)
    learner.optimizer.load_state_dict(state["optimizer"])
    learner.scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    _restore_rng(json.loads((src / RNG_FILE).read_text(encoding="utf-8")))
    learner.global_step = int(meta["step"])
