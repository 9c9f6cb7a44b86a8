"""Rollout backends behind one protocol (``coordexp.backends.protocol``); ``build_backend`` picks one by name.

Backends are imported only when built, so importing this package (or the protocol) loads no torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from coordexp.errors import ConfigError

BACKEND_KEY = "custom.extra.rollout_matching.rollout_backend"

# name -> (module, class); a name mapped to None is planned but not built yet
_REGISTRY: dict[str, tuple[str, str] | None] = {
    "hf": ("coordexp.backends.hf", "HFBackend"),
    "vllm_colocate": ("coordexp.backends.vllm_colocate", "VllmColocateBackend"),
    "vllm_server": ("coordexp.backends.vllm_server", "VllmServerBackend"),
    "recorded": ("coordexp.backends.recorded", "RecordedBackend"),
}


def available() -> tuple[str, ...]:
    """Names that ``build_backend`` can build today."""
    return tuple(name for name, where in _REGISTRY.items() if where is not None)


def build_backend(name: str, **kwargs: Any) -> Any:
    """The backend ``name`` built with ``kwargs`` (see each backend's constructor)."""
    if name not in _REGISTRY:
        raise ConfigError([f"{BACKEND_KEY}: unknown rollout backend {name!r}; known: {sorted(_REGISTRY)}"])
    where = _REGISTRY[name]
    if where is None:
        raise ConfigError([
            f"{BACKEND_KEY}: the {name!r} rollout backend is not built yet; available: {list(available())}. "
            "Fix: use rollout_backend: hf"
        ])
    module, cls = where
    return getattr(importlib.import_module(module), cls)(**kwargs)
