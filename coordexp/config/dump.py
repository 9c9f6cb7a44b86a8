"""Resolved config -> YAML, in the canonical layout, with every default written out.

The output loads back to an equal ``Config`` (tested), so a run folder's copy of it reproduces the run.
"""

from __future__ import annotations

from typing import Any

import yaml

from coordexp.config.convert import config_converter
from coordexp.config.schema_root import Config


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def config_to_plain(config: Config) -> dict[str, Any]:
    """Plain dicts and lists (JSON/YAML-ready)."""
    return _plain(config_converter.unstructure(config))


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_plain(config), sort_keys=False, allow_unicode=True, width=110)
