"""How learner weights reach a colocate vLLM engine, and what leaves the accelerator while vLLM generates.

The engine starts from a servable folder of the current model (``coordexp.learn.checkpoint.export_pretrained``:
merged weights, processor, video processor config). Weight sync, two ways (``vllm.sync.mode``):
- ``full`` (default, what the seeds recommend for multimodal stacks): the LoRA/DoRA deltas merged into the
  base weights, one layer at a time (``coordexp.backends.weight_export``, shared with server mode), written
  to a fresh folder that the engine reloads in place; the previous folder is removed.
- ``adapter``: the engine serves the base weights and each sync writes the PEFT adapter as a new LoRA
  request. vLLM rejects adapters that also train embedding rows (PEFT ``trainable_token_indices``, the
  coord vocabulary added at load time) and, offline, such an adapter kills the engine; so they are checked
  here before anything is pushed (``adapter_blocker``).

Offload (``rollout_matching.offload.*``): the learner's parameters and optimizer state move to the CPU
around the engine's work (start, sync, generate) and back after it, so the engine can use the
accelerator's memory. On a CPU-only machine everything already lives there: a no-op, said once in the log.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from coordexp.backends.weight_export import save_adapter, save_merged_weights
from coordexp.learn.checkpoint import export_pretrained
from coordexp.learn.model import unwrap

log = logging.getLogger("coordexp")


def _peft(model: torch.nn.Module) -> Any | None:
    inner = getattr(model, "module", model)
    return inner if hasattr(inner, "get_base_model") else None


def lora_rank(model: torch.nn.Module) -> int | None:
    """The adapter's rank (the engine's ``max_lora_rank``), None without a PEFT adapter."""
    peft = _peft(model)
    if peft is None:
        return None
    cfg = peft.peft_config[peft.active_adapter]
    ranks = [int(cfg.r), *(int(r) for r in (getattr(cfg, "rank_pattern", None) or {}).values())]
    return max(ranks)


def adapter_blocker(model: torch.nn.Module) -> str | None:
    """Why this model's adapter cannot be pushed to vLLM as a LoRA request, or None when it can."""
    peft = _peft(model)
    if peft is None:
        return "the model has no PEFT adapter (tuner.train_type is not lora)"
    cfg = peft.peft_config[peft.active_adapter]
    if getattr(cfg, "trainable_token_indices", None):
        return ("the adapter trains embedding rows (the coord vocabulary added at load time, PEFT "
                "trainable_token_indices), which vLLM's LoRA loader rejects")
    if getattr(cfg, "modules_to_save", None):
        return f"the adapter trains whole modules ({sorted(cfg.modules_to_save)}), which vLLM's LoRA loader rejects"
    if getattr(cfg, "use_dora", False):
        return "the adapter is DoRA, which vLLM serves only merged"
    return None


class WeightFolders:
    """Numbered export folders under ``root``: the start folder stays (the engine reads its tokenizer and
    processor files), each newer weights folder replaces the one before."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.current: Path | None = None  # the last weights folder a sync wrote

    def _next(self, kind: str) -> Path:
        self.count += 1
        out = self.root / f"{kind}_{self.count:05d}"
        if out.exists():
            shutil.rmtree(out)
        return out

    def _retire(self, new: Path) -> Path:
        old, self.current = self.current, new
        if old is not None and old != new:
            shutil.rmtree(old, ignore_errors=True)
        return new

    def servable(self, model: torch.nn.Module, processor: Any, coord_ids: tuple[int, ...]) -> Path:
        """The model with its adapter merged, as a complete servable folder (what the engine starts from)."""
        return export_pretrained(model, processor, coord_ids, self._next("model"))

    def merged(self, model: torch.nn.Module) -> Path:
        """The merged weights alone (what a full sync reloads)."""
        return self._retire(save_merged_weights(model, self._next("weights")))

    def base(self, model: torch.nn.Module, processor: Any, coord_ids: tuple[int, ...]) -> Path:
        """The base weights without the adapter (adapter sync serves them and pushes the adapter on top)."""
        peft = _peft(model)
        base = copy.deepcopy(peft).unload() if peft is not None else unwrap(model)
        return export_pretrained(base, processor, coord_ids, self._next("base"))

    def adapter(self, model: torch.nn.Module) -> Path:
        """The PEFT adapter alone, in a fresh folder (a new LoRA request each sync); older adapters go."""
        out = save_adapter(model, self._next("adapter"))
        for old in self.root.glob("adapter_*"):
            if old != out:
                shutil.rmtree(old, ignore_errors=True)
        return out


def _offload_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[tuple[int, str], torch.device]:
    """Every accelerator-held state tensor to the CPU; returns where each one lived.

    Each tensor goes back to its OWN device, not the parameters': Adam keeps its ``step`` counters on the
    CPU, and restoring those onto the GPU would cost a host sync on every optimizer step. Copies to the CPU
    are blocking: a non-blocking device-to-host copy into pageable memory may still be running when the
    GPU memory is reused by vLLM.
    """
    homes: dict[tuple[int, str], torch.device] = {}
    for pid, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            if torch.is_tensor(value) and value.device.type != "cpu":
                homes[(pid, key)] = value.device
                state[key] = value.to("cpu")
    return homes


def _restore_optimizer_state(optimizer: torch.optim.Optimizer, homes: dict[tuple[int, str], torch.device]) -> None:
    for pid, state in enumerate(optimizer.state.values()):
        for key, value in state.items():
            home = homes.get((pid, key))
            if home is not None:
                state[key] = value.to(home, non_blocking=True)


class Offload:
    """``offload_model`` / ``offload_optimizer`` around the engine's work (see the module docstring)."""

    def __init__(self, *, model: bool, optimizer: bool, optimizer_of: Callable[[], Any] | None) -> None:
        self.model_on, self.optimizer_on = model, optimizer
        self.optimizer_of = optimizer_of or (lambda: None)
        self._said_noop = False

    @contextlib.contextmanager
    def around(self, model: torch.nn.Module) -> Iterator[None]:
        if not (self.model_on or self.optimizer_on):
            yield
            return
        device = next(model.parameters()).device
        if device.type == "cpu":
            if not self._said_noop:
                log.info("rollout_matching.offload: the learner lives on the CPU already; nothing is moved "
                         "around vLLM rollouts on this machine")
                self._said_noop = True
            yield
            return
        optimizer = self.optimizer_of() if self.optimizer_on else None
        cpu = torch.device("cpu")
        homes: dict[tuple[int, str], torch.device] = {}
        try:
            if self.model_on:
                for p in model.parameters():
                    p.data = p.data.to(cpu)  # blocking: see _offload_optimizer_state
            if optimizer is not None:
                homes = _offload_optimizer_state(optimizer)
            torch.cuda.empty_cache()
            yield
        finally:
            if self.model_on:
                for p in model.parameters():
                    p.data = p.data.to(device, non_blocking=True)
            if optimizer is not None:
                _restore_optimizer_state(optimizer, homes)
            torch.cuda.empty_cache()
